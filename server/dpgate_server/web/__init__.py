"""The transparency page (public, read-only) and the administrator pages, over HTTP.

Served by uvicorn in the server process on a port of its own (`[web]`), rendered on the
server from Jinja2 templates with no JavaScript at all. The public part answers "what else
is going on?": every release with its purpose, question and spend, spend against caps
over time, dataset versions, and the signed audit heads. It never shows a released value,
a row count, a file size or hash, a token, a requester's name or an address.
"""
