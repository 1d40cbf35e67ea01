"""Blind pairwise review of two evaluation runs: the paper's "grounded preference", measured.

    python -m evaluation.review create --runs a=outputs/eval/X b=outputs/eval/Y --reviewers alice,bob
    python -m evaluation.review serve outputs/review/a-vs-b          # one link per reviewer
    python -m evaluation.review judge outputs/review/a-vs-b --base_url http://localhost:8000/v1 --model M
    python -m evaluation.review analyse outputs/review/a-vs-b [--paper]
    python -m evaluation.review export outputs/review/a-vs-b --out votes.csv

Modules: ``study`` (creation, randomisation, export), ``db`` (the SQLite file), ``page`` + ``app``
(the web app), ``judge`` (the VLM judge, both orders), ``analyse`` (rates, CIs, kappa, plot).
"""
