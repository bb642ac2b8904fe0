"""Placeholder: replaced by the module that implements `mova tiny-checkpoint`."""


def register(subparsers) -> None:  # noqa: ARG001
    pass
