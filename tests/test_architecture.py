"""The module map of README.md ("Hacking"), enforced: which folder of the package may import
which, that only fuse/ imports pyfuse3, that no module imports another's private names, and
that the FUSE adapter assigns no write state (the core owns it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "openai_fs"

#: folder -> the folders of the package its modules may import ("" is the package's own
#: top level: __version__)
MAY_IMPORT: dict[str, set[str]] = {
    "api": {"", "api"},
    "core": {"", "api", "core"},
    "fuse": {"", "api", "core", "fuse"},
    "commands": {"", "api", "core", "fuse", "commands", "emulator"},
    # the emulator shares the API's limits with the mount (core/purposes.py, core/sizes.py)
    "emulator": {"", "emulator", "core.purposes", "core.sizes"},
    "": {"", "commands"},
}
#: attributes of the core's write state (FileEntry, LocalFile) that only the core assigns
WRITE_STATE = {"local", "handles", "dirty", "failure", "discarded", "base", "supersedes",
               "early", "removed"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def folder_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of ``path``, with
    relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(("openai_fs",) + path.relative_to(PACKAGE).parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            found.append((module, [alias.name for alias in node.names], node.lineno))
    return found


def own_target(module: str, names: list[str]) -> list[str]:
    """The package paths (below openai_fs, dotted) an import reaches."""
    if module == "openai_fs":
        return names            # from openai_fs import core, __version__, ...
    if module.startswith("openai_fs."):
        inside = module[len("openai_fs."):]
        folder = PACKAGE.joinpath(*inside.split("."))
        if folder.is_dir():     # from openai_fs.core import purposes: the submodules taken
            return [f"{inside}.{name}" if (folder / f"{name}.py").exists() else inside
                    for name in names]
        return [inside]
    return []


def allowed(folder: str, target: str) -> bool:
    if target == "__version__":
        return "" in MAY_IMPORT[folder]
    for rule in MAY_IMPORT[folder]:
        if rule == "" and "." not in target and not (PACKAGE / target).is_dir() and \
                not (PACKAGE / f"{target}.py").exists():
            return True
        if rule and (target == rule or target.startswith(rule + ".")):
            return True
    return False


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_what_its_folder_may(path):
    folder = folder_of(path)
    wrong = []
    for module, names, line in imports(path):
        for target in own_target(module, names):
            if not allowed(folder, target):
                wrong.append(f"line {line}: {folder or 'openai_fs'}/ may not import {target}")
    assert not wrong, "\n".join(wrong)


def test_only_the_fuse_folder_imports_pyfuse3():
    importers = {str(path.relative_to(PACKAGE)) for path in modules()
                 for module, _, _ in imports(path) if module.split(".")[0] == "pyfuse3"}
    assert importers and all(name.startswith("fuse/") for name in importers), importers


def test_no_module_imports_another_modules_private_names():
    wrong = []
    for path in modules():
        for module, names, line in imports(path):
            if not module.startswith("openai_fs"):
                continue
            private = [name for name in names if name.startswith("_")
                       and not name.startswith("__")]
            if private or any(part.startswith("_") and not part.startswith("__")
                              for part in module.split(".")):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line}: {module} {private}")
    assert not wrong, "\n".join(wrong)


def test_no_module_reaches_into_another_modules_private_attributes():
    """``module._name`` of an imported module of the package (``self._x`` is fine)."""
    wrong = []
    for path in modules():
        tree = ast.parse(path.read_text())
        imported = {alias.asname or alias.name for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                        "openai_fs") for alias in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in imported and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: "
                             f"{node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_the_fuse_adapter_assigns_no_write_state():
    wrong = []
    for path in (PACKAGE / "fuse").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr in WRITE_STATE \
                        and not (isinstance(target.value, ast.Name) and target.value.id == "self"):
                    wrong.append(f"{path.name}:{node.lineno}: assigns .{target.attr}")
    assert not wrong, "\n".join(wrong)


def test_the_core_never_imports_fuse_or_the_commands():
    for path in (PACKAGE / "core").glob("*.py"):
        for module, names, _ in imports(path):
            for target in own_target(module, names):
                assert not target.startswith(("fuse", "commands", "emulator")), (path, target)
            assert module.split(".")[0] != "pyfuse3", path
