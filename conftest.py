"""Doctest collection for ``make test``: docstring examples marked ``# doctest: +SKIP`` in
every line illustrate a call (they need a run directory or a dataset) and are not tests,
so they are deselected rather than reported as skipped; every other example runs."""

import doctest


def pytest_collection_modifyitems(config, items):
    illustrations = [
        item
        for item in items
        if getattr(item, "dtest", None) is not None
        and all(example.options.get(doctest.SKIP) for example in item.dtest.examples)
    ]
    if illustrations:
        config.hook.pytest_deselected(items=illustrations)
        items[:] = [item for item in items if item not in illustrations]
