"""Untrusted text (model outputs, prompts, user names, guidelines) turned into something safe to show.

``markdown_html`` renders Markdown on the server with raw HTML switched off: tags in the text come out as
text (``&lt;script&gt;``), code blocks keep their content literally, links with ``javascript:``-like schemes
stay text, and images are shown as their alt text (no request to a URL a model wrote).
"""

from __future__ import annotations

import html
import re
import string

from markdown_it import MarkdownIt

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
# gr.HTML evaluates its template (not its value) as a JS template and Handlebars; braces, "$" and backticks are
# still written as entities so that no template engine anywhere ever sees them as syntax.
_TEMPLATE_CHARACTERS = {ord("{"): "&#123;", ord("}"): "&#125;", ord("$"): "&#36;", ord("`"): "&#96;"}
_MARKDOWN_PUNCTUATION = re.compile("([" + re.escape(string.punctuation.replace("&", "").replace(";", "")) + "])")


def _image_as_text(renderer, tokens, idx, options, env) -> str:  # noqa: ANN001 - markdown-it's rule signature
    alt = "".join(child.content for child in tokens[idx].children or [])
    return html.escape(f"[image: {alt}]", quote=False)


def _link_open(renderer, tokens, idx, options, env) -> str:  # noqa: ANN001
    tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
    tokens[idx].attrSet("target", "_blank")
    return renderer.renderToken(tokens, idx, options, env)


_MARKDOWN.add_render_rule("image", _image_as_text)
_MARKDOWN.add_render_rule("link_open", _link_open)


def markdown_html(text: str | None) -> str:
    """Safe HTML for ``text`` read as Markdown (for a gr.HTML): no raw HTML, no scripts, no images."""
    return _MARKDOWN.render(text or "").translate(_TEMPLATE_CHARACTERS)


def markdown_literal(text: str) -> str:
    """``text`` for a gr.Markdown, shown as written: HTML escaped, and every Markdown character (links, images,
    emphasis, autolinks) backslash-escaped. A user name like ``[x](https://...)`` must not become a link."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(text, quote=False))
