"""The worker's import check: run inside a freshly built image, before it is pushed.

Usage: python3 -B -c "<this file>" <entry> [max files]   (cwd: the image's working directory)

Parses the entry script and the project's own modules reachable from it (ast; imports at
module level and inside functions) and resolves every imported top-level module with
importlib.util.find_spec. Nothing of the project is executed: find_spec of a top-level name
only looks the name up on sys.path. Prints one JSON object on stdout, always exits 0 unless
Python itself fails.
"""
import ast
import importlib.util
import json
import os
import sys
import time

LIMIT = 200  # entries per list in the report
MAX_FILES = 5000  # project files parsed at most (a bound on the check's time)
GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def handler_catches(handler):
    """True when an `except` clause catches ImportError (bare, the class, a parent, or a tuple of them)."""
    kind = handler.type
    if kind is None:
        return True
    names = kind.elts if isinstance(kind, ast.Tuple) else [kind]
    for name in names:
        if isinstance(name, ast.Name) and name.id in GUARDS:
            return True
        if isinstance(name, ast.Attribute) and name.attr in GUARDS:
            return True
    return False


def is_type_checking(test):
    """`if TYPE_CHECKING:` / `if typing.TYPE_CHECKING:`: never true at run time."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def is_environment_test(test):
    """A test of the platform or the Python version (sys.platform, sys.version_info, os.name, platform.*)."""
    for node in ast.walk(test):
        if isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if (owner == "sys" and node.attr in ("platform", "version_info", "implementation")) or (owner == "os" and node.attr == "name") or owner == "platform":
                return True
    return False


class Imports(ast.NodeVisitor):
    """Collects (line, module, level, names, guarded) of every import statement of one file."""

    def __init__(self):
        self.found = []
        self.guard = 0

    def visit_Try(self, node):
        guarded = any(handler_catches(handler) for handler in node.handlers)
        self.guard += guarded
        for child in node.body:
            self.visit(child)
        self.guard -= guarded
        for child in node.handlers + node.orelse + node.finalbody:
            self.visit(child)

    visit_TryStar = visit_Try

    def visit_If(self, node):
        # either branch of a platform or version test may be the one this image never takes
        conditional = is_environment_test(node.test)
        skipped = conditional or is_type_checking(node.test)
        self.guard += skipped
        for child in node.body:
            self.visit(child)
        self.guard -= skipped
        self.guard += conditional
        for child in node.orelse:
            self.visit(child)
        self.guard -= conditional

    def visit_Import(self, node):
        for alias in node.names:
            self.found.append((node.lineno, alias.name, 0, [], self.guard > 0))

    def visit_ImportFrom(self, node):
        self.found.append((node.lineno, node.module or "", node.level, [alias.name for alias in node.names], self.guard > 0))


class Checker:
    def __init__(self, root, max_files):
        self.root = root
        self.max_files = max_files
        self.cwd = os.getcwd()
        self.seen = set()
        self.queue = []
        self.missing = []
        self.guarded = []
        self.notes = []
        self.files = 0
        self.imports = 0
        self.cache = {}

    def rel(self, path):
        """As the user names it: relative to the working directory (where the entry is named from)."""
        return os.path.relpath(path, self.cwd)

    def inside(self, path):
        return path is not None and os.path.abspath(path).startswith(self.root + os.sep)

    def add_file(self, path):
        path = os.path.abspath(path)
        if path not in self.seen and os.path.isfile(path):
            self.seen.add(path)
            self.queue.append(path)

    def add_module_path(self, base, parts):
        """The project's files of module `parts` below folder `base`: each package's __init__.py and the module itself."""
        folder = base
        for index, part in enumerate(parts):
            candidate = os.path.join(folder, part)
            if os.path.isdir(candidate):
                self.add_file(os.path.join(candidate, "__init__.py"))
                folder = candidate
            elif os.path.isfile(candidate + ".py"):
                self.add_file(candidate + ".py")
                return
            else:
                return

    def find_top(self, name):
        if name not in self.cache:
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError) as error:
                self.notes.append("find_spec(%r) failed: %s" % (name, error))
                spec = None
            self.cache[name] = spec
        return self.cache[name]

    def check_absolute(self, path, line, module, names, guarded):
        top = module.split(".")[0]
        if not top:
            return
        self.imports += 1
        spec = self.find_top(top)
        if spec is None:
            entry = {"file": self.rel(path), "line": line, "module": top}
            (self.guarded if guarded else self.missing).append(entry)
            return
        origin = spec.origin if spec.origin not in (None, "namespace") else next(iter(spec.submodule_search_locations or []), None)
        if self.inside(origin):
            # the project's own module: follow it, and `from pkg import sub` when sub is a file
            parts = module.split(".")
            self.add_module_path(self.root, parts)
            for name in names:
                self.add_module_path(self.root, parts + [name])

    def check_relative(self, path, level, module, names):
        base = os.path.dirname(path)
        for _ in range(level - 1):
            base = os.path.dirname(base)
        parts = module.split(".") if module else []
        self.add_module_path(base, parts)
        for name in names:
            self.add_module_path(base, parts + [name])

    def check_file(self, path):
        try:
            with open(path, "rb") as handle:
                tree = ast.parse(handle.read(), filename=path)
        except (SyntaxError, ValueError, OSError) as error:
            self.notes.append("cannot parse %s (%s); its imports are not checked" % (self.rel(path), error))
            return
        self.files += 1
        visitor = Imports()
        visitor.visit(tree)
        for line, module, level, names, guarded in visitor.found:
            if level:
                self.check_relative(path, level, module, names)
            else:
                self.check_absolute(path, line, module, names, guarded)

    def run(self):
        while self.queue:
            if self.files >= self.max_files:
                # e.g. packages installed with `pip install --target` inside the project folder
                self.notes.append("stopped after %d project files; %d more reachable files are not checked" % (self.files, len(self.queue)))
                return
            self.check_file(self.queue.pop(0))


def main():
    started = time.monotonic()
    entry = sys.argv[1] if len(sys.argv) > 1 else "main.py"
    max_files = int(sys.argv[2]) if len(sys.argv) > 2 else MAX_FILES
    path = os.path.abspath(entry)
    report = {"python": sys.version.split()[0], "entry": entry}
    if not os.path.isfile(path):
        report.update(skipped="the entry %s is not at %s in the image" % (entry, path))
    else:
        root = os.path.dirname(path)
        # as `python3 <entry>` would: the entry's folder first on sys.path (-c put the cwd there)
        sys.path[:1] = [root]
        checker = Checker(root, max_files)
        checker.add_file(path)
        checker.run()
        report.update(
            files=checker.files,
            imports=checker.imports,
            missing=checker.missing[:LIMIT],
            guarded=checker.guarded[:LIMIT],
            notes=checker.notes[:LIMIT],
        )
    report["ms"] = round((time.monotonic() - started) * 1000, 1)
    sys.stdout.write(json.dumps(report) + "\n")


main()
