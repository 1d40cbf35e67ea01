"""Cold-start synthesis: a teacher (an OpenAI-compatible VLM, or the offline one for phantoms) writes grounded reasoning, a judge filters it."""
