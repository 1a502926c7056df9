"""Bug injection by AST mutation: the single-site edits of mutation testing, as named operators.

Each operator finds the places in a function's body where it applies and makes one edit there:

- `flip-comparison`: a comparison negated (`<` → `>=`, `==` → `!=`, `in` → `not in`, `is` →
  `is not`);
- `off-by-one`: a bound moved by one (`<` ↔ `<=`, `>` ↔ `>=`), or an integer added, subtracted
  or used as an index changed by one;
- `drop-branch`: an `if` without `else` removed; with `else`, the `if` branch removed so that
  only the `else` one is left;
- `swap-arguments`: the first two positional arguments of a call exchanged;
- `change-constant`: another number (`n` → `n + 1`, `0.5` → `1.5`), `True` ↔ `False`;
- `delete-statement`: an assignment, an expression call or a `return` replaced by `pass`.

The edit replaces only the mutated node's text: the rest of the file, comments included, stays
byte for byte as it was, so a task's reference solution is the reverse of a small diff. Docstrings,
f-strings, decorators and default values are not touched. Every mutation returned parses and
changes the module's AST (the edits are built so; the tests check it on real modules).
"""

from __future__ import annotations

import ast
import copy
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

OPERATORS = (
    "flip-comparison",
    "off-by-one",
    "drop-branch",
    "swap-arguments",
    "change-constant",
    "delete-statement",
)
_NEGATED = {
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_BOUNDARY = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_DELETABLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return)


@dataclass(frozen=True)
class Mutation:
    """One edit of one file: the operator, the function it is in, where, and the text before
    and after (the whole of the mutated node)."""

    operator: str
    path: str
    function: str
    line: int
    end_line: int
    start: int  # character offsets into the file's text
    end: int
    before: str
    after: str

    @property
    def id(self) -> str:
        """A stable name: the same edit of the same file always gets the same one."""
        text = f"{self.path}\0{self.operator}\0{self.start}\0{self.end}\0{self.after}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        before = " ".join(self.before.split())[:80]
        after = " ".join(self.after.split())[:80]
        return (
            f"{self.operator} in {self.function} ({self.path}:{self.line}): {before!r} → {after!r}"
        )


def apply(source: str, mutation: Mutation) -> str:
    """`source` with the mutation applied (the rest of the text unchanged)."""
    if source[mutation.start : mutation.end] != mutation.before:
        raise ValueError(f"{mutation.path}:{mutation.line}: the file changed since it was read")
    return source[: mutation.start] + mutation.after + source[mutation.end :]


def find_mutations(
    source: str,
    path: str,
    functions: set[str] | None = None,
    operators: tuple[str, ...] = OPERATORS,
) -> list[Mutation]:
    """Every single-site mutation of the functions in `source` (all of them, or those whose
    qualified names, such as `Parser.parse`, are in `functions`), in source order."""
    unknown = set(operators) - set(OPERATORS)
    if unknown:
        raise ValueError(f"unknown mutation operator(s) {sorted(unknown)}; known: {OPERATORS}")
    tree = ast.parse(source)
    offsets = _Offsets(source)
    covered = _moved_by_one(tree)
    found: dict[tuple[int, int, str], Mutation] = {}
    for name, function in function_defs(tree):
        if functions is not None and name not in functions:
            continue
        for node in _body_nodes(function):
            for operator in operators:
                if operator == "change-constant" and id(node) in covered:
                    continue  # the same edit as off-by-one's
                for replacement in _RULES[operator](node):
                    m = _mutation(source, offsets, path, name, operator, node, replacement)
                    if m is not None and m.before != m.after:
                        found.setdefault((m.start, m.end, m.after), m)
    return sorted(found.values(), key=lambda m: (m.start, m.end, OPERATORS.index(m.operator)))


def _moved_by_one(tree: ast.Module) -> set[int]:
    """The integer constants off-by-one changes, so change-constant leaves them to it."""
    return {id(target) for node in ast.walk(tree) if (target := _by_one(node)) is not None}


class _Offsets:
    """AST positions (1-based lines, UTF-8 byte columns) as character offsets into the text."""

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def at(self, line: int, col: int) -> int:
        text = self.lines[line - 1].encode()[:col].decode(errors="replace")
        return self.starts[line - 1] + len(text)


def function_defs(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, function) for every function and method, nested ones included."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield prefix + child.name, child
                yield from walk(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")  # type: ignore[misc]


def _body_nodes(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """The nodes of the function's own body: not its docstring, not nested functions or
    classes (they are functions of their own), nothing inside an f-string."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.JoinedStr):
            continue
        yield node
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _mutation(
    source: str,
    offsets: _Offsets,
    path: str,
    function: str,
    operator: str,
    node: ast.AST,
    replacement: ast.AST | list[ast.stmt],
) -> Mutation | None:
    if getattr(node, "end_lineno", None) is None:
        return None
    start = offsets.at(node.lineno, node.col_offset)  # type: ignore[attr-defined]
    end = offsets.at(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
    if isinstance(replacement, list):  # statements, at the indentation of the one replaced
        prefix = source[offsets.starts[node.lineno - 1] : start]  # type: ignore[attr-defined]
        if prefix.strip():
            return None  # not the first statement on its line (after a `;`)
        indent = "\n" + prefix
        lines = [line for stmt in replacement for line in ast.unparse(stmt).splitlines()]
        text = indent.join(lines)
    else:  # an expression of the same kind, so it binds as the original did
        text = ast.unparse(replacement)
    return Mutation(
        operator=operator,
        path=path,
        function=function,
        line=node.lineno,  # type: ignore[attr-defined]
        end_line=node.end_lineno,  # type: ignore[attr-defined]
        start=start,
        end=end,
        before=source[start:end],
        after=text,
    )


def _flip(node: ast.AST) -> Iterator[ast.AST]:
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _NEGATED:
        new = copy.deepcopy(node)
        new.ops = [_NEGATED[type(node.ops[0])]()]
        yield new


def _by_one(node: ast.AST) -> ast.Constant | None:
    """The integer that off-by-one moves in `node`: one added or subtracted, or an index."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
        target = node.right
    elif isinstance(node, ast.Subscript):
        target = node.slice
    else:
        return None
    is_int = isinstance(target, ast.Constant) and type(target.value) is int
    return target if is_int else None  # type: ignore[return-value]


def _off_by_one(node: ast.AST) -> Iterator[ast.AST]:
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _BOUNDARY:
        new = copy.deepcopy(node)
        new.ops = [_BOUNDARY[type(node.ops[0])]()]
        yield new
    elif (target := _by_one(node)) is not None:
        value = target.value
        new = copy.deepcopy(node)
        moved = ast.Constant(value + 1 if isinstance(node, ast.BinOp) or value >= 0 else value - 1)
        if isinstance(new, ast.BinOp):
            new.right = moved
        else:
            new.slice = moved  # type: ignore[attr-defined]
        yield new


def _drop_branch(node: ast.AST) -> Iterator[list[ast.stmt]]:
    if isinstance(node, ast.If):
        yield list(node.orelse) or [ast.Pass()]


def _swap(node: ast.AST) -> Iterator[ast.AST]:
    if isinstance(node, ast.Call) and len(node.args) >= 2:
        first, second = node.args[0], node.args[1]
        if isinstance(first, ast.Starred) or isinstance(second, ast.Starred):
            return
        if ast.dump(first) != ast.dump(second):
            new = copy.deepcopy(node)
            new.args[0], new.args[1] = new.args[1], new.args[0]
            yield new


def _constant(node: ast.AST) -> Iterator[ast.AST]:
    if not isinstance(node, ast.Constant):
        return
    if isinstance(node.value, bool):
        yield ast.Constant(not node.value)
    elif type(node.value) in (int, float) and node.value + 1 != node.value:
        yield ast.Constant(node.value + 1)


def _delete(node: ast.AST) -> Iterator[list[ast.stmt]]:
    if isinstance(node, _DELETABLE) or (
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Call | ast.Await)
    ):
        yield [ast.Pass()]


_RULES: dict[str, Callable[[ast.AST], Iterator]] = {
    "flip-comparison": _flip,
    "off-by-one": _off_by_one,
    "drop-branch": _drop_branch,
    "swap-arguments": _swap,
    "change-constant": _constant,
    "delete-statement": _delete,
}
