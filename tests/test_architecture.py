"""The layers ARCHITECTURE.md states hold in the code: every engine room is in exactly one
layer, no room imports one above it (inside a function only the exceptions the document
lists), module-level imports make no circle, and the front ends remove what they add."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "ARCHITECTURE.md").read_text()


def layers() -> dict[str, int]:
    """room -> layer, from the document's table."""
    found = {}
    for number, rooms in re.findall(r"^\| (\d+) \| (.+) \|$", DOC, flags=re.M):
        for room in re.findall(r"`([\w_]+)`", rooms):
            assert room not in found, f"{room} is in two layers of ARCHITECTURE.md"
            found[room] = int(number)
    return found


def exceptions() -> set[tuple[str, str]]:
    """(room, room above it) pairs a function may import, from the document's list."""
    return set(re.findall(r"^- `([\w_]+)` → `([\w_]+)`:", DOC, flags=re.M))


def room_of(path: Path, package: Path) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    return parts[0]  # a subpackage (bench) is one room


def imports(path: Path, package: Path, name: str):
    """(room imported, at module level?) for each import of the package's own rooms."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    here = path.relative_to(package).parent.parts  # () for a top-level module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
                rooms = [target[0]] if target else [a.name for a in node.names]
            elif node.module and node.module.split(".")[0] == name:
                parts = node.module.split(".")[1:]
                rooms = [parts[0]] if parts else [a.name for a in node.names]
            else:
                continue
        elif isinstance(node, ast.Import):
            rooms = [a.name.split(".")[1] for a in node.names
                     if a.name.startswith(name + ".")]
        else:
            continue
        for room in rooms:
            yield room, id(node) in top


def graph(package: Path, name: str):
    """room -> {room: True when imported at module level somewhere in it}."""
    edges: dict[str, dict[str, bool]] = {}
    for path in package.rglob("*.py"):
        room = room_of(path, package)
        out = edges.setdefault(room, {})
        for other, at_top in imports(path, package, name):
            exists = (package / other).with_suffix(".py").exists() or (package / other).is_dir()
            if other != room and exists:
                out[other] = out.get(other, False) or at_top
    return edges


def circle(edges) -> list[str] | None:
    """A circle of module-level imports, or None."""
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for other, at_top in edges.get(node, {}).items():
            if not at_top:
                continue
            if state.get(other) == 1:
                return path + [other]
            if state.get(other) is None:
                found = visit(other, path + [other])
                if found:
                    return found
        state[node] = 2
        return None

    for node in edges:
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_every_room_of_the_engine_is_in_one_layer():
    stated = layers()
    rooms = {room_of(p, ROOT / "lmlab") for p in (ROOT / "lmlab").rglob("*.py")}
    assert rooms - set(stated) == set(), "rooms ARCHITECTURE.md does not place"
    assert set(stated) - rooms == set(), "ARCHITECTURE.md places rooms that do not exist"


def test_no_room_imports_one_above_it():
    stated, allowed = layers(), exceptions()
    edges = graph(ROOT / "lmlab", "lmlab")
    upward = {(room, other): at_top for room, out in edges.items() for other, at_top in out.items()
              if stated[other] > stated[room]}
    assert [pair for pair, at_top in upward.items() if at_top] == [], "module-level imports upward"
    assert set(upward) == allowed, "function-level imports upward that ARCHITECTURE.md does not list"


def test_module_level_imports_make_no_circle():
    assert circle(graph(ROOT / "lmlab", "lmlab")) is None
    assert circle(graph(ROOT / "widgets", "lmlab.widgets")) is None


def test_every_front_end_removes_what_it_adds():
    """An ES module's cleanup removes each model handler it registers (`model.on` /
    `model.off`) and disconnects each observer; listeners on its own elements go with them."""
    for path in (ROOT / "widgets").glob("*.js"):
        text = path.read_text()
        assert text.count("model.on(") == text.count("model.off("), path.name
        assert text.count("new ResizeObserver") <= text.count(".disconnect()"), path.name
        assert text.count("requestAnimationFrame(") <= text.count("cancelAnimationFrame("), path.name
