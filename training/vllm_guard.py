"""The prompt vLLM generates from must be the prompt TRL trains on (trl 1.16, vLLM 0.31, Qwen2.5-VL).

Colocate mode. TRL hands vLLM the processor's prompt ids, in which each image is already a run of
``<|image_pad|>`` (one per merged patch), plus the image. vLLM 0.31 applies Qwen2.5-VL's
placeholder replacement to those ids again (trl issues 6294, 6401): 16 image tokens became 31
and every rollout came from a corrupted prompt. We send each run collapsed to one token; vLLM
expands it back to the image's size. TRL discards the prompt ids vLLM returns and trains on its
own, so nothing else changes. Every rollout is checked: the runs vLLM processed must equal the
runs TRL sent.

Server mode. The server turns each image into features with its own min/max pixels, and TRL
places them at the prompt's image-token runs, checking only how many runs there are. We check
their lengths: a server started with another frame than the dataset's stops the run.

Weight sync. vLLM keeps the vision encoder's outputs per image (its encoder cache) across
requests, and TRL 1.16 resets only the prefix cache after pushing new weights: an image seen
before a sync would be read with the old vision tower (measured on CPU: greedy rollouts of such
images left ``model.generate``'s from the first token, new images matched exactly). After every
sync we reset the encoder cache too (vLLM's ``reset_encoder_cache``, made for this).

Start-up. One training prompt goes through the path for a single token before training, so a
mismatch shows in seconds rather than after a rollout batch; the probe also measures whether
this vLLM needs the collapse (it tries collapsed first, then as sent).
"""

from __future__ import annotations

ADVICE = (
    "The prompt vLLM generated from is not the prompt TRL trains on (trl issues 6294/6401). "
    "Check that the vLLM release is the tested one (0.31.0), that a vLLM server was started with the "
    "dataset's frame (`make vllm-serve VLLM_MODEL=... VLLM_DATA=...`), or train without vLLM (`use_vllm: false`). "
    "Set `vllm_guard: false` only to reproduce the bug."
)


class ImageTokenMismatch(RuntimeError):
    pass


def count_runs(ids, token_id: int) -> list[int]:
    """Lengths of the runs of ``token_id`` in ``ids`` (one run per image)."""
    runs, n = [], 0
    for t in ids:
        if t == token_id:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    if n:
        runs.append(n)
    return runs


def collapse_runs(ids, token_id: int) -> list[int]:
    """``ids`` with every run of ``token_id`` reduced to one token (what vLLM expands itself)."""
    out = []
    for t in ids:
        if t == token_id and out and out[-1] == token_id:
            continue
        out.append(t)
    return out


def check_expansion(sent_prompt_ids, returned_prompt_ids, image_token_id: int) -> None:
    """Raise unless vLLM processed, per prompt, exactly the image-token runs TRL sent."""
    if not sent_prompt_ids or len(returned_prompt_ids) % len(sent_prompt_ids):
        raise ImageTokenMismatch(
            f"vLLM returned {len(returned_prompt_ids)} prompts for {len(sent_prompt_ids)} sent. {ADVICE}"
        )
    repeat = len(returned_prompt_ids) // len(sent_prompt_ids)
    for i, returned in enumerate(returned_prompt_ids):
        want = count_runs(sent_prompt_ids[i // repeat], image_token_id)
        got = count_runs(returned, image_token_id)
        if got != want:
            raise ImageTokenMismatch(
                f"prompt {i}: TRL sent {sum(want)} image tokens in runs {want}, vLLM processed "
                f"{sum(got)} in runs {got}. {ADVICE}"
            )


def check_placeholders(features: dict | None, prompt_ids, image_token_id: int) -> None:
    """Server mode: the image features' lengths must equal the prompt's image-token runs."""
    if features is None:
        return
    lengths = [p["length"] for p in features["mm_placeholders"]["image"]]
    runs = count_runs(prompt_ids, image_token_id)
    if lengths != runs:
        raise ImageTokenMismatch(
            f"the vLLM server turned the image(s) into {lengths} tokens, the trainer's processor into {runs}: "
            f"the server resizes with other min/max pixels than the dataset's frame.json. {ADVICE}"
        )


class Guard:
    """Wraps a trainer's ``vllm_generation``; ``collapse`` is decided by ``probe``."""

    def __init__(self, generation, image_token_id: int):
        self.generation = generation
        self.image_token_id = image_token_id
        self.collapse = True
        self.checked = 0
        self._generate = generation.generate
        self._place_features = generation._place_features
        self._sync_weights = generation.sync_weights
        generation.generate = self.generate
        generation._place_features = self.place_features
        generation.sync_weights = self.sync_weights

    def sync_weights(self):
        self._sync_weights()
        if self.generation.mode == "colocate":
            self.generation.llm.llm_engine.reset_encoder_cache()
        elif getattr(self.generation, "vllm_client", None) is not None:  # server mode, main process
            client = self.generation.vllm_client
            response = client.session.post(f"{client.base_url}/reset_encoder_cache")
            if response.status_code != 200:
                raise RuntimeError(
                    f"the vLLM server did not reset its encoder cache after a weight sync ({response.status_code}): "
                    "start it with VLLM_SERVER_DEV_MODE=1 (make vllm-serve does)"
                )

    def generate(self, prompts, images=None, num_generations=1, profiler=None):
        if self.generation.mode != "colocate" or images is None:
            return self._generate(prompts, images, num_generations, profiler)
        send = [collapse_runs(p, self.image_token_id) for p in prompts] if self.collapse else prompts
        prompt_ids, *rest = self._generate(send, images, num_generations, profiler)
        check_expansion(prompts, prompt_ids, self.image_token_id)
        self.checked += len(prompt_ids)
        return (list(prompts), *rest)

    def place_features(self, features, prompt_ids):
        check_placeholders(features, prompt_ids, self.image_token_id)
        self.checked += features is not None
        return self._place_features(features, prompt_ids)

    def probe(self, prompt_ids: list[int], images: list) -> str:
        """One prompt, one token, before training; returns what was found."""
        saved = self.generation.max_completion_length
        self.generation.max_completion_length = 1
        try:
            if self.generation.mode != "colocate":
                self.generate([prompt_ids], [images], 1)
                return "server: image features match the prompt's image tokens"
            try:
                self.generate([prompt_ids], [images], 1)
                return "colocate: image-token runs collapsed before vLLM (it expands them once)"
            except ImageTokenMismatch as first:
                self.collapse = False
                try:
                    self.generate([prompt_ids], [images], 1)
                except ImageTokenMismatch:
                    raise first from None
                return "colocate: this vLLM keeps TRL's expanded image tokens (no collapse needed)"
        finally:
            self.generation.max_completion_length = saved


def install(trainer) -> Guard | None:
    """Wrap the trainer's vLLM generation with the checks; None when vLLM is not in use."""
    generation = getattr(trainer, "vllm_generation", None)
    if not getattr(trainer, "use_vllm", False) or generation is None:
        return None
    return Guard(generation, trainer.processing_class.image_token_id)


def probe_with_first_prompt(trainer, guard: Guard) -> str:
    """Tokenise the first training prompt exactly as GRPOTrainer does and send it through ``guard``."""
    from trl.data_utils import prepare_multimodal_messages

    example = trainer.train_dataset[0]
    images = example.get("images") or ([example["image"]] if example.get("image") is not None else None)
    prompt = prepare_multimodal_messages(example["prompt"], images=images) if images else example["prompt"]
    prompt_ids, _, _ = trainer._tokenize_prompts([prompt])
    return guard.probe(list(prompt_ids[0]), images)
