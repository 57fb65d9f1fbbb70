"""Sphinx configuration of gipc's documentation.

Build it from the repository root (after the README's set-up command)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API reference is generated from the docstrings of the installed (or
in-place built) gipc, so the C core must be importable.
"""
import re
from importlib import metadata

import gipc

project = "gipc"
author = "the gipc developers"
copyright = "2026, the gipc developers"
# The version of the gipc being documented: the one imported.
release = getattr(gipc, "__version__", None) or metadata.version("gipc")
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]

exclude_patterns = ["_build"]
# Names without a role (`pipe`) are Python objects: most docstrings say
# ``pipe()`` anyway.
default_role = "py:obj"
primary_domain = "py"
highlight_language = "python3"

# -- API reference ------------------------------------------------------------

autodoc_member_order = "bysource"
# Annotations appear in the signatures; a docstring's own :arg: text stays
# the description.
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# Docstrings are written for ``help()`` as much as for Sphinx, and some put
# a field list (":raises X: ...") right after a paragraph, or a sentence
# right after a field list, without the blank line reStructuredText wants
# there.  Add those blank lines instead of failing the build on them.
_FIELD = re.compile(r"^(\s*):(arg|param|raises?|returns?|rtype|type|var)\b")


def _separate_field_lists(app, what, name, obj, options, lines):
    fixed = []
    in_fields = False
    field_indent = 0
    for line in lines:
        match = _FIELD.match(line)
        if match:
            if fixed and fixed[-1].strip() and not in_fields:
                fixed.append("")
            in_fields = True
            field_indent = len(match.group(1))
        elif in_fields and line.strip():
            indent = len(line) - len(line.lstrip())
            if indent <= field_indent:
                # A plain line at the field list's own indentation ends it.
                fixed.append("")
                in_fields = False
        elif not line.strip():
            in_fields = False
        fixed.append(line)
    lines[:] = fixed


# -- Cross-references ------------------------------------------------------------

# Docstrings name gipc's objects as their own module sees them
# (:exc:`GIPCClosed` in gipc/handles.py): link such a name to the one
# documented object whose full name ends with it.
def _resolve_gipc_suffix(app, env, node, contnode):
    target = node.get("reftarget", "")
    domain = env.get_domain("py")
    matches = [name for name, entry in domain.objects.items()
               if name.endswith("." + target) and name.startswith("gipc.")
               and not entry.aliased]
    if len(matches) != 1:
        return None
    return domain.resolve_xref(env, node["refdoc"], app.builder,
                               node["reftype"], matches[0], node, contnode)


# The standard library's objects link to its documentation on the web (an
# intersphinx inventory would have to be downloaded at build time).
_STDLIB_DOCS = "https://docs.python.org/3/library/%s.html"
_STDLIB = {"atexit", "gc", "logging", "multiprocessing", "os", "pickle",
           "signal", "subprocess", "threading", "warnings"}


def _link_stdlib(node, contnode):
    from docutils import nodes

    target = node.get("reftarget", "")
    top = target.split(".")[0]
    if top not in _STDLIB:
        return None
    page = _STDLIB_DOCS % top
    anchor = ("module-" + target) if node["reftype"] == "mod" else target
    link = nodes.reference("", "", internal=False,
                           refuri="%s#%s" % (page, anchor))
    link.append(contnode)
    return link


def _missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    return (_resolve_gipc_suffix(app, env, node, contnode)
            or _link_stdlib(node, contnode))


def setup(app):
    app.connect("autodoc-process-docstring", _separate_field_lists)
    app.connect("missing-reference", _missing_reference)


# -- HTML -----------------------------------------------------------------------

html_theme = "alabaster"
html_title = "gipc %s" % release
html_theme_options = {
    "description": "gevent-cooperative child processes and "
                   "inter-process communication, with a C core",
    "fixed_sidebar": False,
    # Wide enough for the benchmark table (see benchmarks.rst).
    "page_width": "1160px",
    "body_max_width": "none",
    "show_relbars": True,
}
html_sidebars = {
    "**": ["about.html", "navigation.html", "relations.html",
           "searchbox.html"],
}
html_static_path = []
