"""``python -m evaluation.adapter``: map a benchmark file onto the record schema (YAML-driven).

The adapter lives in data_prep.converters.adapter (EasyR1 import builds on it too); this module keeps
the evaluation-side command and its configs (evaluation/adapters/*.yaml) where benchmark users look.
"""

from data_prep.converters.adapter import *  # noqa: F403
from data_prep.converters.adapter import main

if __name__ == "__main__":
    main()
