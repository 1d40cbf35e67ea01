"""Command line of the blind pairwise review (``python -m evaluation.review COMMAND --help``).

create   a study from two evaluation runs: study.sqlite + study.json, one link per reviewer
start    create the study unless it exists (same runs), then serve it (what `make review` runs)
serve    the review web app on 127.0.0.1 (one link per reviewer)
links    print the reviewers' links; --add new reviewers
export   votes to CSV or JSONL
judge    the same comparison by a VLM judge, each pair in both orders
analyse  preference rates with bootstrap CIs, ties, kappa, per task, the judge, a plot (--paper)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data_prep.errors import OpenMedixError, setup_logging, user_errors
from evaluation.review import db
from evaluation.review.app import DEFAULT_HOST, DEFAULT_PORT, link

log = logging.getLogger(__name__)


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _default_out(runs: dict[str, str], out_root: str = "outputs") -> Path:
    return Path(out_root) / "review" / "-vs-".join(runs)


def _print_links(study, host: str, port: int) -> None:
    with db.connect(db.study_db(study)) as conn:
        for r in db.reviewers(conn):
            print(f"  {r['name']:<16} {link(host, port, r['token'])}")


def _add_reviewers(study, names: list[str], only_new: bool = False) -> None:
    from evaluation.review.study import add_reviewers, write_manifest

    with db.connect(db.study_db(study)) as conn:
        if only_new:
            have = {r["name"] for r in db.reviewers(conn)}
            names = [n for n in names if n not in have]
        if not names:
            return
        with conn:
            add_reviewers(conn, names)
    write_manifest(study)
    log.info("added reviewer(s): %s", ", ".join(names))


# ----------------------------------------------------------------------------- flags


def _add_create_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs=2, required=True, metavar="NAME=DIR", help="two evaluation.run folders")
    p.add_argument("--out", default=None, help="study folder (default: OUT_ROOT/review/NAME1-vs-NAME2)")
    p.add_argument("--out_root", default="outputs", help="the outputs folder (`make review` passes its OUT)")
    p.add_argument(
        "--reviewers",
        default=None,
        help="comma-separated names, one link each (default: reviewer1); "
        "`start` on an existing study adds the names it does not have yet",
    )
    p.add_argument("--limit", type=int, default=None, help="review N records, drawn round-robin over tasks")
    p.add_argument("--seed", type=int, default=None, help="study seed (default: random; always recorded)")
    p.add_argument("--show_truth", action="store_true", help="show the ground truth (answer and boxes)")


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host", default=DEFAULT_HOST, help="interface to bind (default: %(default)s, this machine only)"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument(
        "--allow_remote_credentialed",
        action="store_true",
        help="serve credentialed data on a non-local interface: everyone who can reach it is covered by its DUA",
    )


def _add_analyse_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study")
    p.add_argument(
        "--out", default=None, help="folder for analysis.{json,md} and preference.png (default: the study)"
    )
    p.add_argument(
        "--focus", default=None, help="the run whose preference rate is reported (default: the first)"
    )
    p.add_argument(
        "--paper", action="store_true", help="show the paper's grounded preference 0.7708 beside ours"
    )
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (0: no CIs)")
    p.add_argument("--seed", type=int, default=0)


def _add_judge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study")
    p.add_argument("--base_url", required=True, help="e.g. http://localhost:8000/v1 (vLLM)")
    p.add_argument("--model", required=True)
    p.add_argument(
        "--api_key_env",
        default=None,
        help="env var holding the key (OPENAI_API_KEY; Azure: AZURE_OPENAI_API_KEY)",
    )
    p.add_argument("--azure_api_version", default=None)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--limit", type=int, default=None, help="the first N items only")
    p.add_argument(
        "--show_truth",
        action="store_const",
        const=True,
        default=None,
        help="give the judge the ground truth (default: as the study shows reviewers)",
    )
    p.add_argument(
        "--no_show_truth",
        dest="show_truth",
        action="store_const",
        const=False,
        help="withhold the ground truth",
    )
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--max_retries", type=int, default=5)
    p.add_argument("--max_tokens", type=int, default=300)
    p.add_argument(
        "--allow_remote_credentialed",
        action="store_true",
        help="the remote endpoint keeps no data, trains on none and has no human review",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m evaluation.review",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("create", help="a study from two evaluation runs")
    _add_create_args(p)
    p.add_argument("--host", default=DEFAULT_HOST, help="host in the printed links")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port in the printed links")

    p = sub.add_parser("start", help="create the study unless it exists, then serve it")
    _add_create_args(p)
    _add_serve_args(p)

    p = sub.add_parser("serve", help="serve a study")
    p.add_argument("study")
    _add_serve_args(p)

    p = sub.add_parser("links", help="print the reviewers' links (--add NAMES: new reviewers)")
    p.add_argument("study")
    p.add_argument("--add", default="", help="comma-separated new reviewer names")
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)

    p = sub.add_parser("export", help="votes to a .csv or .jsonl file")
    p.add_argument("study")
    p.add_argument("--out", required=True, help="FILE.csv or FILE.jsonl")

    _add_analyse_args(sub.add_parser("analyse", help="rates, CIs, kappa, per task, judge, plot"))
    _add_judge_args(
        sub.add_parser(
            "judge", help="the comparison by a VLM judge (OpenAI-compatible endpoint), both orders"
        )
    )
    return ap


# ----------------------------------------------------------------------------- commands


def _create(args) -> Path:
    from evaluation.review.study import create_study
    from evaluation.runs import parse_runs

    runs = parse_runs(args.runs)
    out = Path(args.out) if args.out else _default_out(runs, args.out_root)
    study, _ = create_study(
        runs,
        out,
        _names(args.reviewers or "reviewer1"),
        limit=args.limit,
        seed=args.seed,
        show_truth=args.show_truth,
    )
    with db.connect(db.study_db(study)) as conn:
        m = db.meta(conn)
    tasks = ", ".join(f"{t} {n}" for t, n in m["tasks"].items())
    print(
        f"study {study}: {m['n_items']} items ({tasks}), seed {m['seed']}, ground truth {'shown' if m['show_truth'] else 'hidden'}"
    )
    return study


def _cmd_create(args) -> None:
    study = _create(args)
    print("Links (serve with `python -m evaluation.review serve " + str(study) + "`):")
    _print_links(study, args.host, args.port)


def _cmd_serve(args) -> None:
    """``serve`` a study, or ``start``: create it unless it exists (with the same runs), then serve it."""
    from evaluation.review.app import serve

    if args.command == "start":
        from evaluation.review.study import check_same_runs
        from evaluation.runs import parse_runs

        runs = parse_runs(args.runs)
        study = Path(args.out) if args.out else _default_out(runs, args.out_root)
        if db.study_db(study).exists():
            check_same_runs(study, runs)
            log.info("resuming study %s", study)
            _add_reviewers(study, _names(args.reviewers or ""), only_new=True)
        else:
            study = _create(args)
    else:
        study = Path(args.study)
    serve(study, host=args.host, port=args.port, allow_remote_credentialed=args.allow_remote_credentialed)


def _cmd_links(args) -> None:
    _add_reviewers(args.study, _names(args.add))
    _print_links(args.study, args.host, args.port)


def _cmd_export(args) -> None:
    from evaluation.review.study import export

    n = export(args.study, args.out)
    print(f"{n} votes -> {args.out}")


def _cmd_analyse(args) -> None:
    from evaluation.review.analyse import write_analysis

    result = write_analysis(
        args.study, args.out, focus=args.focus, paper=args.paper, n_boot=args.bootstrap, seed=args.seed
    )
    print(result["report"])
    print(f"written: analysis.json, analysis.md, preference.png in {args.out or args.study}")


def _cmd_judge(args) -> None:
    from evaluation.review.judge import judge_study

    api_key_env = args.api_key_env or ("AZURE_OPENAI_API_KEY" if args.azure_api_version else "OPENAI_API_KEY")
    judge_study(
        args.study,
        base_url=args.base_url,
        model=args.model,
        api_key_env=api_key_env,
        azure_api_version=args.azure_api_version,
        concurrency=args.concurrency,
        limit=args.limit,
        show_truth=args.show_truth,
        allow_remote_credentialed=args.allow_remote_credentialed,
        timeout=args.timeout,
        max_retries=args.max_retries,
        max_tokens=args.max_tokens,
    )
    print(f"next: python -m evaluation.review analyse {args.study}")


COMMANDS = {
    "create": _cmd_create,
    "start": _cmd_serve,
    "serve": _cmd_serve,
    "links": _cmd_links,
    "export": _cmd_export,
    "analyse": _cmd_analyse,
    "judge": _cmd_judge,
}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging()
    with user_errors(f"evaluation.review {args.command}", OpenMedixError, FileNotFoundError):
        COMMANDS[args.command](args)


if __name__ == "__main__":
    main()
