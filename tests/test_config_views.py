"""Each subsystem is given the frozen views of its sections, not the whole ``Config``.

Read from the source (AST, no imports): the modules whose functions take a parameter annotated
``Config``, or whose classes declare an attribute of that type, must be exactly the composition
roots and the renderers listed here, each with its reason. A new module that takes the whole
``Config`` fails; so does a module listed here that no longer needs it (drop it from the list).
"""

from __future__ import annotations

import ast
import asyncio
import pickle
import types
from pathlib import Path

from fleet.balancer.context import PER_REQUEST_LIMITS, ProxyContext
from fleet.balancer.policy import UpstreamSet
from fleet.balancer.settings import ProxyViews
from fleet.balancer.stats import ProxyStats
from fleet.config import Config, LimitSettings
from fleet.supervisor.settings import SupervisorViews

SRC = Path(__file__).resolve().parent.parent / "src" / "fleet"

# module -> why it may take the whole Config
ALLOWED = {
    # The composition roots: they build every subsystem from the config and hand out views.
    "fleet.runner": "the master of `fleet up`: the composition root",
    "fleet.frontage": "the master's outward half (a mixin of runner.Master, its attributes)",
    "fleet.front.factory": "picks the front the config asks for and builds it (composition)",
    "fleet.balancer.standalone": "`fleet balance`: the composition root of the standalone proxy",
    "fleet.balance.front": "`fleet balance --resolve`: the composition root of the front tier",
    "fleet.balance.cliargs": "checks `fleet balance --resolve`'s options together, before the root runs",
    "fleet.cli": "turns argv into the Config",
    # Views are picked out of a Config in one place each.
    "fleet.balancer.settings": "ProxyViews.of: picks the proxy's sections, reads nothing else",
    "fleet.supervisor.settings": "SupervisorViews.of: picks the supervisor's sections",
    # The config itself, and what completes it before anything is built from it.
    "fleet.config.model": "Config and changed_sections",
    "fleet.config.validate": "the cross-section rules",
    "fleet.bokeh_settings": "with_run_secrets: the run's Bokeh secrets, a new Config",
    # A live reload: a new Config is read, compared whole with the running one, then handed out.
    "fleet.config.reloadplan": "plan_reload: compares every option of the running and the new Config",
    "fleet.reloading": "prepare: builds the new Config from the source and the running one",
    "fleet.front.builtin": "apply: the fronts' one reload interface takes the Config; picks ProxyViews.of it",
    # The renderers: every option reaches a generated file, or is checked against one.
    "fleet.configgen.__init__": "renders every option",
    "fleet.configgen.apache": "renders every option",
    "fleet.configgen.common": "renders every option",
    "fleet.configgen.deployment": "renders every option",
    "fleet.configgen.docker": "renders every option",
    "fleet.configgen.haproxy": "renders every option",
    "fleet.configgen.kubernetes": "renders every option",
    "fleet.configgen.kubernetes_front": "renders the front tier's options",
    "fleet.configgen.nginx": "renders every option",
    "fleet.configgen.systemd": "renders every option",
    "fleet.configgen.session_routing": "renders every option (decides from workers, upstreams, sticky and the data plane)",
    "fleet.front.managed": "hands the Config to the managed server's renderer (DataPlane.prepare)",
    "fleet.dataplane.plane": "renders the managed nginx/HAProxy configuration (configgen)",
    "fleet.dataplane.files": "Renderer: the managed server's configuration, through configgen",
    "fleet.dataplane.model": "refusals/downgrades: every option checked against the managed server",
}


def _is_config(node: ast.expr | None) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # "Config" (a forward ref)
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return False
    if isinstance(node, ast.Name):
        return node.id == "Config"
    if isinstance(node, ast.Attribute):
        return node.attr == "Config"
    if isinstance(node, ast.BinOp):  # Config | None
        return _is_config(node.left) or _is_config(node.right)
    if isinstance(node, ast.Subscript):  # Optional[Config], tuple[Config, ...]
        return _is_config(node.value) or _is_config(node.slice)
    if isinstance(node, ast.Tuple):
        return any(_is_config(element) for element in node.elts)
    return False


def takers_of_config(tree: ast.AST) -> list[str]:
    """The functions with a parameter annotated ``Config`` and the class attributes of that type."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
                if arg is not None and _is_config(arg.annotation):
                    found.append(f"{node.name}({arg.arg})")
        elif isinstance(node, ast.ClassDef):
            found += [f"{node.name}.{ast.unparse(item.target)}" for item in node.body
                      if isinstance(item, ast.AnnAssign) and _is_config(item.annotation)]
    return found


def modules_taking_config() -> dict[str, list[str]]:
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        found = takers_of_config(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if found:
            modules[".".join(path.relative_to(SRC.parent).with_suffix("").parts)] = found
    return modules


def test_only_the_composition_roots_and_renderers_take_the_whole_config() -> None:
    modules = modules_taking_config()
    unexpected = {name: found for name, found in modules.items() if name not in ALLOWED}
    assert not unexpected, f"take a section view (config.limits, ...), not the whole Config: {unexpected}"
    stale = sorted(set(ALLOWED) - set(modules))
    assert not stale, f"no longer take the whole Config: drop them from ALLOWED: {stale}"


def test_the_scan_finds_every_way_of_annotating_config() -> None:
    source = '''
def a(config: Config): ...
async def b(x: int, *, config: "Config | None" = None): ...
def c(config: fleet.config.Config): ...
def d(limits: LimitSettings, config: "Config"): ...
class E:
    config: Config
def f(limits: LimitSettings, name: str = "Config"): ...
'''
    assert takers_of_config(ast.parse(source)) == ["a(config)", "b(config)", "c(config)", "d(config)", "E.config"]


def test_subsystems_get_views_of_their_sections() -> None:
    config = Config(app="a.py", port=8000, max_body_size=1234, ssl_certfile="c.pem", trusted_proxy=("10.0.0.0/8",),
                    access_log=True, prefix="/dash", max_requests=7, log_dir="/tmp/x")
    views = ProxyViews.of(config)
    assert (views.frontend, views.limits, views.tls, views.trust) == (config.frontend, config.limits, config.tls,
                                                                      config.trust)
    assert views.access_log and views.cookie_prefix == "/dash"
    assert not isinstance(views.limits, Config) and type(views.limits) is LimitSettings
    # Sent as is to every proxy process; port 0 resolved once for all of them.
    assert pickle.loads(pickle.dumps(views)) == views
    bound = views.bound(8123, None)
    assert bound.frontend.port == 8123 and bound.limits == views.limits and bound.tls.https_redirect_port is None
    supervisor = SupervisorViews.of(config)
    assert supervisor.workers == config.supervisor and supervisor.recycling.max_requests == 7
    assert supervisor.log_dir == "/tmp/x"
    for index in range(3):
        for block in (0, 1):
            assert supervisor.worker_port(index, block) == config.worker_port(index, block)
        assert supervisor.worker_id(index, 2) == config.worker_id(index, 2)


def test_the_proxy_reads_its_per_request_limits_from_slots_set_once() -> None:
    limits = {name: index + 1 for index, name in enumerate(PER_REQUEST_LIMITS)}
    views = ProxyViews.of(Config(**limits))  # type: ignore[arg-type]

    async def build() -> ProxyContext:
        stats = ProxyStats()
        return ProxyContext(views.frontend, views.limits, views.tls, views.trust, stats, UpstreamSet(stats, 0))

    context = asyncio.run(build())
    for name, value in limits.items():
        # A slot (one attribute load per request), not a property that builds a view per call.
        assert isinstance(ProxyContext.__dict__[name], types.MemberDescriptorType), name
        assert getattr(context, name) == value == getattr(views.limits, name), name
