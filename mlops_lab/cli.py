"""``mlops-lab``: the same operations from a shell or a CI pipeline.

Every command takes ``--json`` for machine-readable output. Exit codes a pipeline can branch on:
0 ok, 3 not found, 4 invalid input, 5 conflict, 6 artifact corrupted, 7 storage error,
8 unauthorized, 9 deployment failed, 10 unhealthy (``status``), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._args import key_values, options

EXIT_UNHEALTHY = 10
EXIT_ALERT = 12


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


# --- commands ---------------------------------------------------------------------------------


def cmd_register(args) -> int:
    import mlops_lab as ml

    mv = ml.register_model(
        args.path, args.name, tags=key_values(args.tag), properties=key_values(args.property),
        description=args.description or "", entry_script=args.entry_script,
    )
    _out(args, mv.to_dict(), f"registered {mv.ref} ({mv.flavor}, {mv.size} bytes)")
    return 0


def cmd_models(args) -> int:
    import mlops_lab as ml

    if args.name:
        versions = ml.search_model_versions(name=args.name)
        if not versions:
            ml.get_model(args.name)  # raises ModelNotFound with suggestions
        _out(args, [v.to_dict() for v in versions],
             "\n".join(f"{v.ref:<30} {v.flavor:<8} aliases={','.join(v.aliases) or '-'} tags={v.tags}" for v in versions))
    else:
        models = ml.list_models()
        data = [m.to_dict() for m in models]
        _out(args, data, "\n".join(f"{m.name:<30} versions={m.versions:<4} latest={m.latest_version} aliases={m.aliases}" for m in models) or "no models yet")
    return 0


def cmd_alias(args) -> int:
    import mlops_lab as ml

    mv = ml.set_alias(args.name, args.alias, int(args.version))
    _out(args, mv.to_dict(), f"{args.name}@{args.alias} -> {mv.ref}")
    return 0


def cmd_deploy(args) -> int:
    import mlops_lab as ml

    ref = args.refs if len(args.refs) > 1 else args.refs[0]
    settings = options(args.option)
    if args.dry_run:
        from .deployers.kubernetes import render_manifests, to_yaml
        from .errors import InvalidInput

        if args.target != "kubernetes":
            raise InvalidInput("--dry-run writes Kubernetes manifests: use it with --target kubernetes")
        settings.pop("context", None)
        print(to_yaml(render_manifests(ref, args.name, auth=not args.no_auth, **settings)), end="")
        return 0
    if isinstance(ref, str) and Path(ref).exists():
        ref = Path(ref)  # a model file or folder: registered as the next version of --name, then deployed
    d = ml.deploy(
        ref, name=args.name, target=args.target, host=args.host, port=args.port,
        workers=args.workers, auth=not args.no_auth, collect=not args.no_collect, progress=not args.json, **settings,
    )
    data = {**d.to_dict(), "keys": d.keys, "registered": d.registered.ref if d.registered else None}
    text = (f"registered {d.registered.ref}\n" if d.registered else "") + f"{d.name}: {d.url}"
    _out(args, data, text + (f"\nprimary key: {d.keys['primary']}" if d.keys else ""))
    return 0


def cmd_export(args) -> int:
    from .packaging import export_bundle

    path, keys = export_bundle(args.ref, args.path, platform=args.platform, python_version=args.python_version,
                               auth=not args.no_auth, progress=not args.json)
    _out(args, {"path": str(path), "keys": keys},
         f"bundle: {path}\nrun it: ./run.sh (PORT=8080)" + (f"\nprimary key: {keys['primary']}" if keys else ""))
    return 0


def cmd_build_image(args) -> int:
    from ._progress import Progress
    from .deployers.docker import build_image
    from .packaging import DEFAULT_BASE_IMAGE

    prog = Progress("building", enabled=not args.json)
    tag = build_image(args.refs if len(args.refs) > 1 else args.refs[0], args.tag,
                      base_image=args.base_image or DEFAULT_BASE_IMAGE, progress=prog)
    prog.done(tag)
    _out(args, {"image": tag}, tag)
    return 0


def cmd_update(args) -> int:
    import mlops_lab as ml

    ref = Path(args.ref) if Path(args.ref).exists() else args.ref  # a model file: registered first
    d = ml.update(args.deployment, ref, traffic=args.traffic, shadow=args.shadow or False, progress=not args.json)
    data = {**d.to_dict(), "registered": d.registered.ref if d.registered else None}
    _out(args, data, (f"registered {d.registered.ref}\n" if d.registered else "") + f"{d.name}: revision {d.revision}")
    return 0


def cmd_rollback(args) -> int:
    import mlops_lab as ml

    d = ml.rollback(args.deployment, progress=not args.json)
    _out(args, d.to_dict(), f"{d.name}: revision {d.revision}")
    return 0


def cmd_restart(args) -> int:
    import mlops_lab as ml

    d = ml.restart(args.deployment, progress=not args.json)
    _out(args, d.to_dict(), f"{d.name}: revision {d.revision} at {d.url}")
    return 0


def cmd_delete_shadow(args) -> int:
    import mlops_lab as ml

    d = ml.delete_shadow(args.deployment, progress=not args.json)
    _out(args, d.to_dict(), f"{d.name}: revision {d.revision}, no shadow")
    return 0


def cmd_watch(args) -> int:
    import asyncio
    import logging
    import signal

    from .monitoring.watch import watch_home
    from .workspace import current

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    registry = current().registry
    names = args.deployments or None
    if names:
        for name in names:
            registry.get_deployment(name)  # a wrong name: one line and exit 3, before the loop

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await watch_home(lambda: registry, stop, names, poll_s=args.poll)

    asyncio.run(run())
    return 0


def cmd_promote(args) -> int:
    import mlops_lab as ml

    d = ml.promote(args.deployment, progress=not args.json)
    _out(args, d.to_dict(), f"{d.name}: revision {d.revision}")
    return 0


def cmd_config(args) -> int:
    from .workspace import current

    rows = current().settings.describe()
    _out(args, rows, "\n".join(f"{r['setting']:<16} {r['value']:<48} ({r['from']})" for r in rows))
    return 0


def cmd_deployments(args) -> int:
    import mlops_lab as ml

    ds = ml.list_deployments()
    _out(args, [d.to_dict() for d in ds],
         "\n".join(f"{d.name:<24} {d.target:<7} {d.url:<28} rev={d.revision} {d.record.status}" for d in ds) or "no deployments")
    return 0


def cmd_status(args) -> int:
    import mlops_lab as ml

    st = ml.get_deployment(args.deployment).status()
    _out(args, st.to_dict(), str(st))
    return 0 if st.healthy else EXIT_UNHEALTHY


def cmd_logs(args) -> int:
    import mlops_lab as ml

    text = ml.get_deployment(args.deployment).logs(tail=args.tail)
    _out(args, {"logs": text.splitlines()}, text)
    return 0


def cmd_undeploy(args) -> int:
    import mlops_lab as ml

    existed = ml.delete_deployment(args.deployment)
    _out(args, {"deleted": existed}, f"{args.deployment}: " + ("deleted" if existed else "was not deployed"))
    return 0


def cmd_score(args) -> int:
    import mlops_lab as ml

    from .errors import InvalidInput

    if args.model or args.input:
        return _score_batch(args)
    if not args.deployment or args.data is None:
        raise InvalidInput("score needs a DEPLOYMENT and --data, or --model REF and --input FILE (batch)")
    raw = args.data
    if raw.startswith("@"):
        with open(raw[1:], encoding="utf-8") as f:
            raw = f.read()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--data is not JSON: {exc}") from None
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    out = ml.get_deployment(args.deployment).predict(data)
    print(json.dumps(out))
    return 0


def _score_batch(args) -> int:
    import mlops_lab as ml

    from .errors import InvalidInput

    if not (args.model and args.input) or args.deployment or args.data:
        raise InvalidInput("batch scoring takes --model REF and --input FILE (and --output FILE), no deployment or --data")
    if args.engine == "dask":
        summary = ml.score_batch(args.model, args.input, output=args.output, keep_inputs=args.keep_inputs,
                                 progress=not args.json, engine="dask", address=args.address)
        _out(args, {"model": args.model, "input": args.input, **summary},
             f"scored {summary['rows']:,} rows in {summary['files']} files with {args.model} on Dask -> {summary['output']}")
        return 0
    if args.address:
        raise InvalidInput("--address is for --engine dask")
    scored = ml.score_batch(args.model, args.input, output=args.output, keep_inputs=args.keep_inputs, progress=not args.json)
    summary = {"model": args.model, "input": args.input, "output": args.output, "rows": len(scored)}
    if args.output:
        _out(args, summary, f"scored {len(scored):,} rows with {args.model} -> {args.output}")
    elif args.json:
        print(scored.to_json(orient="records"))
    else:
        print(scored.to_csv(index=False), end="")
    return 0


def cmd_sql(args) -> int:
    import mlops_lab as ml

    from .errors import InvalidInput

    try:
        with open(args.query, encoding="utf-8") as f:
            query = f.read()
    except OSError as exc:
        raise InvalidInput(f"cannot read the query file {args.query}: {exc.strerror}") from None
    models = {}
    for item in args.model:
        name, sep, ref = item.partition("=")
        if not sep:  # REF alone: the function takes the model's name
            ref, name = item, item.split("@")[0].split(":")[0].replace("-", "_").replace(".", "_")
        models[name] = ref
    table = ml.run_sql(query, models, collect=args.collect)
    if args.output:
        import pyarrow.csv
        import pyarrow.parquet as pq

        tmp = f"{args.output}.tmp"
        if args.output.endswith(".csv"):
            pyarrow.csv.write_csv(table, tmp)
        else:
            pq.write_table(table, tmp)
        os.replace(tmp, args.output)
        _out(args, {"rows": table.num_rows, "output": args.output}, f"{table.num_rows:,} rows -> {args.output}")
    elif args.json:
        print(json.dumps(table.to_pylist(), default=str))
    else:
        print(table.to_pandas().to_csv(index=False), end="")
    return 0


def cmd_monitor(args) -> int:
    import mlops_lab as ml

    chart = ml.monitor(args.deployment, since=args.since)
    if args.export:
        chart.save(args.export)
        _out(args, {"exported": args.export}, f"chart saved to {args.export}")
    else:
        m = ml.metrics(args.deployment, every=args.every, since=args.since)
        _out(args, json.loads(m.to_json(orient="records", date_format="iso")), m.to_string(index=False))
    return 0


def cmd_compare(args) -> int:
    import mlops_lab as ml

    result = ml.compare(args.deployment, metric=args.metric, level=args.level, since=args.since)
    _out(args, result.to_dict(), str(result))
    return 0


def cmd_card(args) -> int:
    import mlops_lab as ml

    card = ml.model_card(args.ref, since=args.since)
    if args.output:
        path = card.save(args.output)
        _out(args, {"written": str(path)}, f"card of {card.ref} written to {path}")
    else:
        _out(args, {"ref": card.ref, "markdown": card.markdown}, card.markdown)
    return 0


def cmd_alerts(args) -> int:
    import mlops_lab as ml

    from ._args import options

    if args.rule:
        ml.set_alerts(args.deployment, options(args.rule), webhook=args.webhook, every=args.every)
    elif args.clear:
        ml.set_alerts(args.deployment, [])
    found = ml.get_alerts(args.deployment)
    lines = [f"{r['kind']} over {r['window']}: fires {'below' if r['kind'] == 'accuracy' else 'above'} {r['threshold']:g}"
             for r in found["rules"]] or ["no alert rules"]
    if found["webhook"]:
        lines.append(f"webhook: {found['webhook']}")
    lines += [f"{'fired' if e['status'] == 'firing' else 'resolved'} {e['rule']['kind']} = {e['value']} "
              f"({e['delivery'].get('status', 'not sent')})" for e in found["events"][:5]]
    _out(args, found, "\n".join(lines))
    return 0


def cmd_check(args) -> int:
    import mlops_lab as ml

    result = ml.check_alerts(args.deployment)
    _out(args, result.to_dict(), str(result))
    return 0 if result.ok else EXIT_ALERT


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    where = common.add_argument_group("where (each defaults to its MLOPS_LAB_* variable, then HOME/config.toml)")
    where.add_argument("--home", help="the home folder ($MLOPS_LAB_HOME)")
    where.add_argument("--db", help="the registry database URL ($MLOPS_LAB_DB)")
    where.add_argument("--artifacts", help="the artifact store, a folder or s3://bucket/prefix ($MLOPS_LAB_ARTIFACTS)")
    where.add_argument("--collection", help="the collection store, a folder or s3://bucket/prefix ($MLOPS_LAB_COLLECTION)")
    ap = argparse.ArgumentParser(prog="mlops-lab", description=__doc__.splitlines()[0], parents=[common])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("register", parents=[common], help="register a model file or folder")
    p.add_argument("path")
    p.add_argument("--name", required=True)
    p.add_argument("--tag", action="append", metavar="KEY=VALUE")
    p.add_argument("--property", action="append", metavar="KEY=VALUE")
    p.add_argument("--description")
    p.add_argument("--entry-script")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("models", parents=[common], help="list models, or the versions of one")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("alias", parents=[common], help="point NAME@ALIAS to a version")
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version")
    p.set_defaults(func=cmd_alias)

    p = sub.add_parser("deploy", parents=[common], help="deploy one or several model versions")
    p.add_argument("refs", nargs="+")
    p.add_argument("--name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-auth", action="store_true")
    p.add_argument("--no-collect", action="store_true")
    p.add_argument("--target", default="local", choices=["local", "docker", "kubernetes"])
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                   help="a target setting, e.g. -o base_image=python:3.11-slim, -o image=reg/churn:3, -o replicas=2 "
                        "(values are JSON when they parse as JSON)")
    p.add_argument("--dry-run", action="store_true", help="with --target kubernetes: print the manifests as YAML")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("export", parents=[common], help="export an edge bundle (folder, or .tar.gz)")
    p.add_argument("ref")
    p.add_argument("path")
    p.add_argument("--platform", help="wheels for another platform, e.g. manylinux2014_aarch64")
    p.add_argument("--python-version", help="wheels for another Python, e.g. 3.11")
    p.add_argument("--no-auth", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("build-image", parents=[common], help="build the Docker image of one or several versions")
    p.add_argument("refs", nargs="+")
    p.add_argument("--tag")
    p.add_argument("--base-image", default=None)
    p.set_defaults(func=cmd_build_image)

    p = sub.add_parser("update", parents=[common], help="serve another version, with no downtime")
    p.add_argument("deployment")
    p.add_argument("ref")
    p.add_argument("--traffic", type=float, help="canary share in percent")
    p.add_argument("--shadow", type=float, nargs="?", const=1.0, metavar="SHARE",
                   help="run it beside the serving version on a copy of the requests (all, or SHARE of them, "
                        "0-1), its answers collected, never returned")
    p.set_defaults(func=cmd_update)

    for name, func, text in (("rollback", cmd_rollback, "serve the previous revision"),
                             ("promote", cmd_promote, "complete a canary (or a shadow)"),
                             ("delete-shadow", cmd_delete_shadow, "stop a deployment's shadow"),
                             ("restart", cmd_restart, "start the current revision again at the same address"),
                             ("status", cmd_status, "reconciled state; exit 10 unless healthy"),
                             ("undeploy", cmd_undeploy, "stop and forget a deployment")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("deployment")
        p.set_defaults(func=func)

    p = sub.add_parser("watch", parents=[common], help="evaluate alert rules until stopped: of the deployments nothing "
                       "runs beside (Kubernetes), or of those named")
    p.add_argument("deployments", nargs="*")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between readings of the rules and deployments")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("config", parents=[common], help="the settings in force and where each comes from")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("deployments", parents=[common], help="list deployments")
    p.set_defaults(func=cmd_deployments)

    p = sub.add_parser("logs", parents=[common], help="a deployment's log")
    p.add_argument("deployment")
    p.add_argument("--tail", type=int, default=100)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("score", parents=[common], help="send rows to a deployment, or score a file in batch with --model")
    p.add_argument("deployment", nargs="?", help="the deployment to send --data to")
    p.add_argument("--data", help="JSON rows, or @file.json (with a deployment)")
    p.add_argument("--model", metavar="REF", help="batch: score --input with this version, in this process")
    p.add_argument("--input", metavar="FILE", help="batch: a .parquet or .csv file")
    p.add_argument("--output", metavar="FILE", help="batch: write the predictions to this .parquet file")
    p.add_argument("--keep-inputs", action="store_true", help="batch: the input columns before the predictions")
    p.add_argument("--engine", choices=["local", "dask"], default="local",
                   help="batch: in this process, or on a Dask cluster (--input a Parquet dataset, --output a folder "
                        "or s3://bucket/prefix)")
    p.add_argument("--address", metavar="tcp://HOST:PORT", help="batch on Dask: the scheduler (default: a local cluster)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("sql", parents=[common], help="run a SQL query file (DuckDB) with registered versions as functions")
    p.add_argument("query", metavar="QUERY.sql")
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]REF",
                   help="a version to call as NAME(...) in the query (default name: the model's); repeatable")
    p.add_argument("--output", metavar="FILE", help="write the result to this .parquet or .csv file")
    p.add_argument("--collect", action="store_true", help="collect the calls like a deployment's (as NAME-sql)")
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("monitor", parents=[common], help="metrics, or the chart with --export")
    p.add_argument("deployment")
    p.add_argument("--since", default="24h")
    p.add_argument("--every", default="1h")
    p.add_argument("--export", metavar="FILE", help="save the chart (.html, .png, .svg, .json)")
    p.set_defaults(func=cmd_monitor)
    p = sub.add_parser("compare", parents=[common], help="the A/B readout of a canary, from feedback labels")
    p.add_argument("deployment")
    p.add_argument("--metric", default="accuracy", choices=["accuracy", "mae", "rmse"])
    p.add_argument("--level", type=float, default=0.05, help="significance level")
    p.add_argument("--since", help="how far back: 30min, 1h, 7d (default: everything collected)")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("alerts", parents=[common], help="set (--rule KIND=THRESHOLD ...) or show a deployment's alert rules")
    p.add_argument("deployment")
    p.add_argument("--rule", "-r", action="append", metavar="KIND=THRESHOLD",
                   help="error_rate, latency_p99_ms, accuracy, drift or dropped_rows (replaces the rules)")
    p.add_argument("--webhook", help="POST each firing here as JSON")
    p.add_argument("--every", default="1min", help="how often the deployment evaluates them")
    p.add_argument("--clear", action="store_true", help="remove the rules")
    p.set_defaults(func=cmd_alerts)
    p = sub.add_parser("check", parents=[common], help=f"evaluate the alert rules now; exit {EXIT_ALERT} if one fires")
    p.add_argument("deployment")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("card", parents=[common], help="the model card of a version (Markdown, or -o card.html)")
    p.add_argument("ref")
    p.add_argument("--output", "-o", metavar="FILE", help="write it to FILE (.html or .md)")
    p.add_argument("--since", default="7d", help="the deployments' traffic of how long: 1h, 7d")
    p.set_defaults(func=cmd_card)
    return ap


def main(argv: list[str] | None = None) -> int:
    from .errors import MlopsLabError

    args = build_parser().parse_args(argv)
    try:
        from .workspace import Workspace

        # Built once from the options, the environment and the config file; every call acts on it.
        workspace = Workspace(home=args.home, db=args.db, artifacts=args.artifacts, collection=args.collection)
        with workspace.activate():
            return args.func(args)
    except MlopsLabError as exc:
        if args.debug:
            raise
        if args.json:
            print(json.dumps(exc.to_dict()), file=sys.stderr)
        else:
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
