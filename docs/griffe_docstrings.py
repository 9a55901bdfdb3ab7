"""griffe extension: read a class docstring written as ``__doc__ = (Base.__doc__ or "") + "..."``.

``sd.Adam`` and ``sd.AdamW`` share their base class's docstring this way (one text for the
update, then each class's defaults). griffe reads the source without running it, so it sees
no docstring there; this evaluates that one form: a base class of the same module, plus a
string literal.
"""

from __future__ import annotations

import ast
import inspect

import griffe


class ConcatenatedDocstrings(griffe.Extension):
    def on_class_members(self, *, node, cls, agent, **kwargs):
        if cls.docstring is not None or not isinstance(node, ast.ClassDef):
            return
        for statement in node.body:
            if not (
                isinstance(statement, ast.Assign)
                and [getattr(t, "id", None) for t in statement.targets] == ["__doc__"]
                and isinstance(statement.value, ast.BinOp)
                and isinstance(statement.value.op, ast.Add)
            ):
                continue
            base, tail = statement.value.left, statement.value.right
            if isinstance(base, ast.BoolOp) and isinstance(base.op, ast.Or):
                base = base.values[0]  # `(Base.__doc__ or "")`: None under python -OO
            if not (
                isinstance(base, ast.Attribute)
                and base.attr == "__doc__"
                and isinstance(base.value, ast.Name)
                and isinstance(tail, ast.Constant)
                and isinstance(tail.value, str)
            ):
                continue
            source = cls.parent.members.get(base.value.id)
            if source is None or source.docstring is None:
                continue
            text = source.docstring.value + "\n\n" + inspect.cleandoc(tail.value)
            cls.docstring = griffe.Docstring(text, lineno=statement.lineno, parent=cls)
