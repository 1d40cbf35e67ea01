// Keyboard voting for the review page: a / b / t choose for the highlighted criterion and move on,
// arrows move, c focuses the comment (Esc leaves it), Enter saves, p / n go to the previous / next item.
(function () {
  const form = document.getElementById("vote");
  if (!form) return;
  const shown = performance.now();
  const rows = Array.from(form.querySelectorAll("fieldset.criterion"));
  const comment = form.querySelector("textarea[name=comment]");
  const missing = document.getElementById("missing");
  let active = 0;

  function setActive(i) {
    active = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach((row, j) => row.classList.toggle("active", j === active));
  }
  function firstOpen() {
    const i = rows.findIndex((row) => !row.querySelector("input:checked"));
    return i < 0 ? rows.length - 1 : i;
  }
  function choose(value) {
    const input = rows[active].querySelector(`input[value="${value}"]`);
    input.checked = true;
    missing.hidden = true;
    if (active < rows.length - 1) setActive(active + 1);
  }
  function submit() {
    const open = rows.findIndex((row) => !row.querySelector("input:checked"));
    if (open >= 0) {
      setActive(open);
      missing.hidden = false;
      return;
    }
    form.requestSubmit();
  }

  rows.forEach((row, i) => row.addEventListener("click", () => setActive(i)));
  form.addEventListener("change", (e) => {
    const i = rows.findIndex((row) => row.contains(e.target));
    if (i >= 0 && e.target.type === "radio" && i === active && i < rows.length - 1) setActive(i + 1);
  });
  form.addEventListener("submit", (e) => {
    if (form.dataset.sent) {
      e.preventDefault(); // one vote per press, however fast the keys
      return;
    }
    form.dataset.sent = "1";
    form.elements.elapsed_ms.value = String(Math.round(performance.now() - shown));
    document.getElementById("submit").disabled = true;
  });
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target === comment) {
      if (e.key === "Escape") comment.blur();
      return;
    }
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    const link = { p: "prev", n: "next" }[key];
    if (key === "a" || key === "b") choose(key.toUpperCase());
    else if (key === "t") choose("tie");
    else if (key === "ArrowDown") setActive(active + 1);
    else if (key === "ArrowUp") setActive(active - 1);
    else if (key === "c") comment.focus();
    else if (key === "Enter") submit();
    else if (link && document.getElementById(link)) window.location = document.getElementById(link).href;
    else return;
    e.preventDefault();
  });
  setActive(firstOpen());
})();
