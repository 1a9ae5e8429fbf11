"""IPython magics: ``%load_ext mlops_lab``.

They only parse, call the core API and return its object (so ``v = %register_model clf --name
churn`` works, and the notebook shows the object's rich summary). An error is one line (a
``UsageError`` with the reason and the fix); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ._args import key_values, options
from .errors import MlopsLabError


def _friendly(method):
    """Parse the line with the method's magic_arguments; turn mlops_lab errors into one line."""

    @functools.wraps(method)
    def wrapper(self, line=""):
        args = parse_argstring(wrapper, line)
        try:
            return method(self, args)
        except MlopsLabError as exc:
            if getattr(args, "debug", False):
                raise
            raise UsageError(f"{exc}") from None

    return wrapper


@magics_class
class MlopsLabMagics(Magics):
    def _var(self, name):
        if name is None:
            return None
        try:
            return self.shell.user_ns[name]
        except KeyError:
            raise UsageError(f"no variable named {name!r} in this notebook") from None

    @line_magic
    @magic_arguments()
    @argument("var", help="the variable holding the model (an object, or a file or folder path)")
    @argument("--name", required=True, help="model name")
    @argument("--tags", nargs="*", metavar="KEY=VALUE", help="tags")
    @argument("--sample", metavar="VAR", help="variable with a sample input (gives the signature)")
    @argument("--baseline", metavar="VAR", help="variable with training data (reference for drift)")
    @argument("--description", default="", help="description")
    @argument("--allow-missing", nargs="*", metavar="COLUMN",
              help="columns in which the model takes missing values (none given: every column)")
    @argument("--debug", action="store_true", help="show the traceback of an error")
    @_friendly
    def register_model(self, args):
        """Register the model held by a variable as the next version of --name."""
        from .registry.api import register_model

        # magic_arguments keeps the quotes of a quoted name ("petal length (cm)")
        allow = None if args.allow_missing is None else ([a.strip("'\"") for a in args.allow_missing] or True)
        return register_model(
            self._var(args.var), args.name, tags=key_values(args.tags, '--tags team=growth'), description=args.description,
            sample_input=self._var(args.sample), baseline=self._var(args.baseline), allow_missing=allow,
        )

    @line_magic
    @magic_arguments()
    @argument("ref", help="model reference (name, name:VERSION, name@ALIAS), or a variable holding a model "
                          "to register and deploy in one step (with --name)")
    @argument("--name", help="deployment name (default: the model's)")
    @argument("--sample", metavar="VAR", help="with a model variable: a sample input (gives the signature)")
    @argument("--baseline", metavar="VAR", help="with a model variable: training data (reference for drift)")
    @argument("--target", default="local", choices=["local", "docker", "kubernetes"], help="where it runs")
    @argument("--port", type=int, help="port (default: a free one)")
    @argument("--workers", type=int, default=1, help="server processes")
    @argument("--no-auth", action="store_true", help="serve without keys")
    @argument("--option", "-o", nargs="*", metavar="KEY=VALUE",
              help="target settings: base_image=..., image=..., namespace=..., replicas=2")
    @argument("--debug", action="store_true", help="show the traceback of an error")
    @_friendly
    def deploy(self, args):
        """Deploy a registered version as a web service; returns the Deployment. Given a variable
        holding a model, register it as the next version of --name first."""
        from .deployers.api import deploy

        return deploy(self._model_or_ref(args.ref), name=args.name, target=args.target, port=args.port,
                      workers=args.workers, auth=not args.no_auth, sample_input=self._var(args.sample),
                      baseline=self._var(args.baseline), **options(args.option))

    def _model_or_ref(self, text: str):
        """A variable of the notebook holding a model (not a string), else the reference as typed."""
        value = self.shell.user_ns.get(text)
        return value if value is not None and not isinstance(value, str) else text

    @line_magic
    @magic_arguments()
    @argument("deployment")
    @argument("ref", help="the version to serve, or a variable holding a model to register first")
    @argument("--traffic", type=float, help="canary share in percent (then %%promote or %%rollback)")
    @argument("--shadow", type=float, nargs="?", const=1.0, metavar="SHARE",
              help="run it beside the serving version on a copy of the requests (all, or SHARE of them), "
                   "answers collected, never returned (then %%compare, %%promote or %%undeploy --shadow)")
    @argument("--sample", metavar="VAR", help="with a model variable: a sample input (gives the signature)")
    @argument("--baseline", metavar="VAR", help="with a model variable: training data (reference for drift)")
    @argument("--debug", action="store_true", help="show the traceback of an error")
    @_friendly
    def update(self, args):
        """Serve another version with no downtime (a canary with --traffic, a shadow with
        --shadow). Given a variable holding a model, register it as the next version of the
        served model first."""
        from .deployers.api import update

        return update(args.deployment, self._model_or_ref(args.ref), traffic=args.traffic, shadow=args.shadow or False,
                      sample_input=self._var(args.sample), baseline=self._var(args.baseline))

    @line_magic
    @magic_arguments()
    @argument("deployment")
    @argument("--debug", action="store_true", help="show the traceback of an error")
    @_friendly
    def rollback(self, args):
        """Serve the previous revision again."""
        from .deployers.api import rollback

        return rollback(args.deployment)

    @line_magic
    @magic_arguments()
    @argument("deployment")
    @argument("--debug", action="store_true", help="show the traceback of an error")
    @_friendly
    def promote(self, args):
        """Complete a canary (or a shadow): its version takes all the traffic of its route."""
        from .deployers.api import promote

        return promote(args.deployment)

    @line_magic
    @magic_arguments()
    @argument("deployment")
    @argument("--debug", action="store_true", help="show the traceback of an error")
    @_friendly
    def restart(self, args):
        """Start a deployment's current revision again at the same address (e.g. after a crash)."""
        from .deployers.api import restart

        return restart(args.deployment)

    @line_magic
    @magic_arguments()
    @argument("deployment")
    @argument("--shadow", action="store_true", help="stop only its shadow; what serves stays")
    @argument("--debug", action="store_true", help="show the traceback of an error")
    @_friendly
    def undeploy(self, args):
        """Stop and forget a deployment (with --shadow: stop its shadow)."""
        from .deployers.api import delete_deployment, delete_shadow

        if args.shadow:
            return delete_shadow(args.deployment)
        return delete_deployment(args.deployment)

    @line_magic
    @magic_arguments()
    @argument("name", nargs="?", help="a model name: its versions")
    @argument("--debug", action="store_true", help="show the traceback of an error")
    @_friendly
    def models(self, args):
        """The registered models, or the versions of one."""
        from .registry.api import get_model, list_models, search_model_versions

        if args.name:
            found = search_model_versions(name=args.name)
            if not found:
                get_model(args.name)  # ModelNotFound, with the closest names
            return found
        return list_models()

    @line_magic
    @magic_arguments()
    @argument("--debug", action="store_true", help="show the traceback of an error")
    @_friendly
    def deployments(self, args):
        """Every deployment."""
        from .deployers.api import list_deployments

        return list_deployments()

    @line_magic
    @magic_arguments()
    @argument("deployment")
    @argument("--since", default="24h", help="how far back: 30min, 1h, 7d")
    @argument("--drift", action="store_true", help="the drift table instead of the chart")
    @argument("--refresh", type=float, metavar="SECONDS", help="a live panel that redraws every SECONDS")
    @argument("--debug", action="store_true", help="show the traceback of an error")
    @_friendly
    def monitor(self, args):
        """The monitoring chart of a deployment (or, with --drift, its drift table)."""
        from .monitoring.api import drift, monitor

        if args.drift:
            return drift(args.deployment)
        if args.refresh:
            from .deployers.api import get_deployment
            from .widgets import MonitorPanel

            get_deployment(args.deployment)  # DeploymentNotFound as one line, before a panel exists
            if args.refresh < 1:
                raise UsageError("--refresh takes seconds, at least 1")
            return MonitorPanel(args.deployment, since=args.since, refresh=args.refresh)
        return monitor(args.deployment, since=args.since)

    @line_magic
    @magic_arguments()
    @argument("ref", help="model reference (name, name:VERSION, name@ALIAS)")
    @argument("--since", default="7d", help="the deployments' traffic of how long: 1h, 7d")
    @argument("--output", "-o", metavar="FILE", help="also write it to FILE (.html or .md)")
    @argument("--debug", action="store_true", help="show the traceback of an error")
    @_friendly
    def model_card(self, args):
        """The model card of a version: what the registry and its deployments' data know."""
        from .cards import model_card

        card = model_card(args.ref, since=args.since)
        if args.output:
            card.save(args.output)
        return card

    @line_magic
    @magic_arguments()
    @argument("deployment")
    @argument("--metric", default="accuracy", help="accuracy (from feedback labels), mae or rmse")
    @argument("--level", type=float, default=0.05, help="significance level")
    @argument("--since", help="how far back: 30min, 1h, 7d (default: everything collected)")
    @argument("--chart", action="store_true", help="a shadow's readout: show its chart too")
    @argument("--debug", action="store_true", help="show the traceback of an error")
    @_friendly
    def compare(self, args):
        """The A/B readout of a canary (each version's live metric, the test, the verdict), or
        of a shadow (agreement or differences, prediction shift, latency) on the same requests."""
        from .monitoring.readout import compare

        result = compare(args.deployment, metric=args.metric, level=args.level, since=args.since)
        if args.chart and hasattr(result, "chart"):
            from IPython.display import display

            display(result)
            return result.chart()
        return result


# -- tab completion ---------------------------------------------------------------------------
# What each magic's positional arguments name, in order.
_POSITIONALS = {
    "deploy": ["ref"], "update": ["deployment", "ref"], "rollback": ["deployment"], "promote": ["deployment"], "restart": ["deployment"], "undeploy": ["deployment"],
    "monitor": ["deployment"], "compare": ["deployment"], "model_card": ["ref"], "models": ["model"], "register_model": ["variable"],
}


def _candidates(kind: str, word: str, shell) -> list[str]:
    if kind == "deployment":
        from .deployers.api import list_deployments

        return [d.name for d in list_deployments()]
    if kind == "variable":
        return [k for k in shell.user_ns if not k.startswith("_")]
    from .registry.api import list_models, search_model_versions

    models = list_models()
    if kind == "model":
        return [m.name for m in models]
    name, sep, _ = word.partition(":")
    if sep:
        return [v.ref for v in search_model_versions(name=name)]
    return [m.name for m in models] + [f"{m.name}@{a}" for m in models for a in m.aliases] + \
        [f"{m.name}:" for m in models if m.latest_version]


def complete(magic: str, line: str, symbol: str, shell) -> list[str]:
    """Completions for the word under the cursor of ``%magic ...line``: options, model names,
    references (``name``, ``name:VERSION``, ``name@ALIAS``) and deployment names."""
    words = line.split()
    word = "" if not words or line.endswith((" ", "\t")) else words[-1]
    done = [x for x in words[1:] if not x.startswith("-")]
    if word:
        done = done[:-1] if done and done[-1] == word else done
    method = getattr(MlopsLabMagics, magic)
    if word.startswith("-"):
        options = [o for a in method.parser._actions for o in a.option_strings if o.startswith("--")]
        found = options
    else:
        kinds = _POSITIONALS.get(magic, [])
        if len(done) >= len(kinds):
            return []
        found = _candidates(kinds[len(done)], word, shell)
    # IPython replaces only the text after the last delimiter (``:``, ``@``...): trim the rest.
    cut = len(word) - len(symbol)
    return sorted(c[cut:] for c in found if c.startswith(word))


def _completer(magic: str):
    def hook(shell, event):
        try:
            return complete(magic, event.text_until_cursor, event.symbol, shell)
        except Exception:  # never break the user's tab key
            return []

    return hook


def load(ipython) -> None:
    ipython.register_magics(MlopsLabMagics)
    for magic in _POSITIONALS:
        ipython.set_hook("complete_command", _completer(magic), str_key=f"%{magic}")
