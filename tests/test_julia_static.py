"""Static checks of the Julia bridge (julia/*.jl, Project.toml, pysciml/juliapkg.json).

These run without Julia: the sources are parsed with tree-sitter-julia.
"""

import json
import pathlib
import re

import pytest
import tomllib

tree_sitter = pytest.importorskip("tree_sitter")
tree_sitter_julia = pytest.importorskip("tree_sitter_julia")

ROOT = pathlib.Path(__file__).resolve().parent.parent
JULIA_DIR = ROOT / "julia"
JULIA_FILES = sorted(JULIA_DIR.rglob("*.jl"))

# Names the Python side relies on (kept in sync with pysciml by hand).
CALLED_FUNCTIONS = {"forward", "vjp", "forward_native", "vjp_native", "locate",
                    "locate_native"}
SOLVERS = {"Tsit5", "DP5", "DP8", "Kvaerno5", "Rodas5P", "FBDF"}
SENSEALGS = {"GaussAdjoint", "InterpolatingAdjoint", "QuadratureAdjoint", "BacksolveAdjoint"}
# Modules a `using`/`import` may name without a [deps] entry.
STDLIB_OR_BUILTIN = {"Base", "Core", "LinearAlgebra", "Logging", "Printf"}


def _parser():
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_julia.language()))


def _parse(source: bytes):
    return _parser().parse(source)


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)


def _inside_index(node):
    while node is not None:
        if node.type == "index_expression":
            return True
        node = node.parent
    return False


def _problems(tree):
    """ERROR / MISSING nodes, as (line, kind) pairs.

    tree-sitter-julia accepts a stray `end` as an identifier (it is one only inside
    `x[...]`), so an unbalanced `end` would not show up as an ERROR node; such
    identifiers are reported here too.
    """
    out = []
    for node in _walk(tree.root_node):
        if node.is_error or node.is_missing:
            out.append((node.start_point[0] + 1, "missing" if node.is_missing else "error"))
        elif node.type == "identifier" and node.text == b"end" and not _inside_index(node):
            out.append((node.start_point[0] + 1, "stray end"))
    return out


@pytest.fixture(scope="module")
def trees():
    assert JULIA_FILES, f"no Julia sources under {JULIA_DIR}"
    return {path: _parse(path.read_bytes()) for path in JULIA_FILES}


def _defined_functions(tree):
    """Names of functions defined by `function name(...)` or `name(...) = ...`."""
    names = set()

    def call_name(node):
        # Strip `where` clauses and return-type annotations down to the call.
        while node is not None and node.type in ("where_expression", "typed_expression"):
            node = node.named_children[0] if node.named_children else None
        if node is None or node.type != "call_expression":
            return None
        head = node.named_children[0]
        return head.text.decode() if head.type == "identifier" else None

    for node in _walk(tree.root_node):
        if node.type == "function_definition":
            sig = next((c for c in node.named_children if c.type == "signature"), None)
            if sig is not None and sig.named_children:
                name = call_name(sig.named_children[0])
                if name:
                    names.add(name)
        elif node.type == "assignment" and node.named_children:
            name = call_name(node.named_children[0])
            if name:
                names.add(name)
    return names


def _string_literals(tree):
    return {
        node.text.decode()[1:-1]
        for node in _walk(tree.root_node)
        if node.type == "string_literal" and not any(
            c.type == "string_interpolation" for c in node.named_children
        )
    }


def _imported_packages(tree):
    """First module name of every `using X`, `using X: a`, `import X, Y`."""
    pkgs = set()
    for node in _walk(tree.root_node):
        if node.type not in ("using_statement", "import_statement"):
            continue
        for child in node.named_children:
            target = child.named_children[0] if child.type == "selected_import" else child
            if target.type == "identifier":
                pkgs.add(target.text.decode())
            elif target.type in ("scoped_identifier", "field_expression"):
                pkgs.add(target.text.decode().split(".")[0])
    return pkgs


# ---------------------------------------------------------------- parsing


def test_julia_sources_parse_cleanly(trees):
    bad = {str(p.relative_to(ROOT)): _problems(t) for p, t in trees.items() if _problems(t)}
    assert not bad, f"tree-sitter-julia found syntax problems: {bad}"


@pytest.mark.parametrize(
    "snippet",
    [
        b"function g(x\n    return x\nend\n",
        b"function f(x)\n    return (x\nend\n",
        b"y = [1, 2\n",
        b"try\n    f()\ncatch e\n",
    ],
)
def test_parser_flags_broken_julia(snippet):
    assert _parse(snippet).root_node.has_error
    assert _problems(_parse(snippet))


@pytest.mark.parametrize(
    "snippet",
    [b"function f(x)\n    x\nend\nend\n", b"function f(x)\n    x +\nend end\n"],
)
def test_stray_end_is_flagged(snippet):
    # has_error misses these; _problems must not.
    assert ("stray end" in {kind for _, kind in _problems(_parse(snippet))})


def test_end_inside_indexing_is_fine():
    assert not _problems(_parse(b"y = x[2:end]\nz = @view x[(end - 1):end]\n"))


def test_sources_are_not_modules(trees):
    # The files are `include`d into a module made by juliacall.newmodule.
    for path, tree in trees.items():
        kinds = {n.type for n in _walk(tree.root_node)}
        assert "module_definition" not in kinds, f"{path} declares a module"


def test_includes_resolve(trees):
    for path, tree in trees.items():
        for node in _walk(tree.root_node):
            if node.type == "call_expression" and node.named_children[0].text == b"include":
                args = node.named_children[1].named_children
                assert len(args) == 1 and args[0].type == "string_literal", path
                target = path.parent / args[0].text.decode()[1:-1]
                assert target.is_file(), f"{path} includes missing {target}"


# ---------------------------------------------------------------- interface


def test_called_functions_are_defined(trees):
    defined = set().union(*(_defined_functions(t) for t in trees.values()))
    missing = CALLED_FUNCTIONS - defined
    assert not missing, f"functions not defined in julia/: {missing}"


def test_function_finder_sees_definitions():
    # Guards the finder itself, so the test above cannot pass vacuously.
    tree = _parse(b"function a(x) end\nb(x)::Int where {T} = 1\nc = 3\nfunction M.d(x) end\n")
    assert _defined_functions(tree) == {"a", "b"}


def test_solver_and_sensealg_names_are_string_literals(trees):
    literals = set().union(*(_string_literals(t) for t in trees.values()))
    assert not SOLVERS - literals, f"solver names missing: {SOLVERS - literals}"
    assert not SENSEALGS - literals, f"sensealg names missing: {SENSEALGS - literals}"


# ---------------------------------------------------------------- environments


def _project():
    with open(ROOT / "Project.toml", "rb") as fh:
        return tomllib.load(fh)


def _juliapkg():
    with open(ROOT / "pysciml" / "juliapkg.json") as fh:
        return json.load(fh)


def test_project_is_a_plain_environment():
    project = _project()
    assert set(project) == {"deps", "compat"}


def test_project_and_juliapkg_agree():
    project, jpkg = _project(), _juliapkg()
    deps, compat, packages = project["deps"], project["compat"], jpkg["packages"]
    assert set(deps) == set(packages)
    assert set(compat) == set(deps) | {"julia"}
    for name, spec in packages.items():
        assert spec["uuid"] == deps[name], name
        assert spec["version"] == compat[name], name
    assert jpkg["julia"] == compat["julia"]


def test_uuids_and_compat_strings_are_well_formed():
    uuid = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    clause = re.compile(r"^[\^~=]?\d+(\.\d+){0,2}$")
    project = _project()
    for name, value in project["deps"].items():
        assert uuid.match(value), name
    for name, value in project["compat"].items():
        for part in value.split(","):
            assert clause.match(part.strip()), f"{name}: {value!r}"


def test_pythoncall_pinned_to_juliacall():
    # juliacall X.Y.Z pins PythonCall =X.Y.Z in its own juliapkg.json.
    version = _juliapkg()["packages"]["PythonCall"]["version"]
    assert re.fullmatch(r"=\d+\.\d+\.\d+", version)
    try:
        import importlib.metadata as md

        juliacall_version = md.version("juliacall")
    except Exception:
        pytest.skip("juliacall not installed")
    assert version == "=" + juliacall_version


def test_compat_strings_parse_with_juliapkg():
    compat = pytest.importorskip("juliapkg.compat")
    for spec in [_juliapkg()["julia"], *(p["version"] for p in _juliapkg()["packages"].values())]:
        assert compat.Compat.parse(spec), spec


def test_imported_packages_are_dependencies(trees):
    deps = set(_project()["deps"])
    imported = set().union(*(_imported_packages(t) for t in trees.values()))
    assert imported, "found no using/import statements"
    assert not imported - deps - STDLIB_OR_BUILTIN, imported - deps
    # Every dependency is used (a stale [deps] entry would still be installed).
    assert not deps - imported, deps - imported


# ---------------------------------------------------------------- sparsity


def test_bridge_takes_the_sparsity_pattern():
    """`JuliaBackend` passes the pattern as two trailing 1-based index vectors
    (`_jac_pattern`); the bridge takes them, with empty defaults, and builds a
    `jac_prototype` from them."""
    source = (JULIA_DIR / "PySciML.jl").read_text()
    for name in CALLED_FUNCTIONS:
        match = re.search(rf"^function {name}\((.*?)\)\n", source, re.S | re.M)
        assert match, name
        params = [p.strip() for p in match.group(1).split(",")]
        assert params[-2:] == ["jac_rows = Int[]", "jac_cols = Int[]"], params
    callbacks = (JULIA_DIR / "pycallbacks.jl").read_text()
    assert "SparseArrays.sparse(" in callbacks
    assert "jac_prototype = proto" in callbacks


def test_native_entries_take_the_arguments_of_the_python_ones():
    """`JuliaBackend` sends `forward_native`/`vjp_native` the three kernel addresses and
    `poll` in place of the three callables, then the same arguments as to
    `forward`/`vjp`/`locate`."""
    source = (JULIA_DIR / "PySciML.jl").read_text()

    def params(name):
        match = re.search(rf"^function {name}\((.*?)\)\n", source, re.S | re.M)
        assert match, name
        return [p.strip() for p in match.group(1).split(",")]

    for name in ("forward", "vjp", "locate"):
        python, native = params(name), params(f"{name}_native")
        assert python[:3] == native[:3] == ["f", "vjp_u", "vjp_p"]
        assert native[3] == "poll"
        assert native[4:] == python[3:]


def test_locate_takes_the_arguments_julia_backend_sends():
    """`JuliaBackend.host_locate` sends, after the callables (and `poll`), the condition
    `g`, then `y0, p, t0, t1, direction`, then the arguments of `forward` after `ts`;
    `tests/test_julia_layer.py` checks the Python side of the same order."""
    source = (JULIA_DIR / "PySciML.jl").read_text()

    def params(name):
        match = re.search(rf"^function {name}\((.*?)\)\n", source, re.S | re.M)
        assert match, name
        return [p.strip() for p in match.group(1).split(",")]

    forward = params("forward")
    assert params("locate") == (forward[:3] + ["g", "u0", "p", "t0", "t1", "direction"]
                                + forward[8:])
    assert params("locate_native")[4] == "g"
    # The ContinuousCallback's affects: which crossing directions terminate.
    assert re.search(r"direction > 0\n\s+up, down = stop!, nothing\n", source)
    assert re.search(r"direction < 0\n\s+up, down = nothing, stop!\n", source)
    assert re.search(r"else\n\s+up, down = stop!, stop!\n", source)
    assert "SciMLBase.ContinuousCallback(condition, up, down;" in source
