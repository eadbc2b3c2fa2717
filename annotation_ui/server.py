"""The HTTP server around the Gradio app: our own login page and session cookie, logout, admin-only exports,
uploads refused.

``POST /login`` takes the form fields ``username`` and ``password`` (what the page and gradio_client's
``Client(url, auth=(name, password))`` send). It checks them with ``store.login`` in a worker thread with a small
limit of its own (password hashing is slow on purpose; a burst of logins must neither block the event loop nor
take the threads Gradio runs the raters' calls in). A browser gets a redirect to the app, any other client
``{"success": true}``; both get the session cookie. A refused login answers 401 (wrong name or password) or
429 (throttled), with store.login's message on the page.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import secrets
import threading
from typing import Any

import anyio
import anyio.to_thread
import gradio as gr
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount

from alignment.annotations import AnnotationStore
from alignment.annotations.export import MODES
from alignment.errors import AlignmentError

log = logging.getLogger("annotation_ui")
COOKIE = "annotation-session"
LOGIN_THREADS = 2  # password checks at once; more would only make each one slower on a small machine
EXPORTS = ("preferences", "rankings", "feedback")
LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: system-ui, sans-serif; background: #f6f7f9; display: grid; place-items: center; min-height: 90vh; }}
 form {{ background: white; padding: 2rem; border-radius: 8px; box-shadow: 0 1px 4px #0002; width: 22rem; }}
 label {{ display: block; margin-top: 1rem; }} input {{ width: 100%; padding: .5rem; box-sizing: border-box; }}
 button {{ margin-top: 1.5rem; width: 100%; padding: .6rem; background: #f97316; color: white; border: 0;
   border-radius: 4px; font-size: 1rem; cursor: pointer; }}
 #login-message {{ color: #b91c1c; margin-top: 1rem; }}
</style></head>
<body><form method="post" action="login">
<h2>{title}</h2><p>Log in with the account your annotation admin gave you.</p>
<label>User name <input type="text" name="username" value="{name}" autocomplete="username" autofocus required></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required></label>
<div id="login-message" role="alert">{message}</div>
<button type="submit">Login</button>
</form></body></html>
"""


class Sessions:
    """Session tokens (random, in memory: a restart logs everyone out) and whose they are."""

    def __init__(self) -> None:
        self._users: dict[str, str] = {}
        self._lock = threading.Lock()

    def start(self, name: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._users[token] = name
        return token

    def user(self, request: Request) -> str | None:
        """The logged-in user of ``request`` (its session cookie), or None."""
        return self._users.get(request.cookies.get(COOKIE, ""))

    def end(self, request: Request) -> None:
        with self._lock:
            self._users.pop(request.cookies.get(COOKIE, ""), None)


class _LoginFirst:
    """ASGI middleware: the app's page (/) is the login page for anyone without a session."""

    def __init__(self, app: Any, sessions: Sessions, title: str) -> None:
        self.app, self.sessions, self.title = app, sessions, title

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in ("", "/"):
            if self.sessions.user(Request(scope)) is None:
                await _login_page(self.title)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _login_page(title: str, message: str = "", name: str = "", status_code: int = 200) -> HTMLResponse:
    page = LOGIN_PAGE.format(title=html.escape(title), message=html.escape(message), name=html.escape(name))
    return HTMLResponse(page, status_code=status_code)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _export_rows(store: AnnotationStore, name: str, mode: str, gold: bool, flagged: bool) -> list[dict]:
    if name == "feedback":
        return store.export_feedback(include_gold=gold, include_flagged=flagged)
    export = store.export_preferences if name == "preferences" else store.export_rankings
    return export(mode, gold, include_flagged=flagged)


def build_server(store: AnnotationStore, blocks: gr.Blocks, title: str, **mount_kwargs: Any) -> FastAPI:
    """A FastAPI app serving ``blocks`` at / behind our login, plus /login, /logout and /export/*.jsonl."""
    sessions = Sessions()
    login_limiter = anyio.CapacityLimiter(LOGIN_THREADS)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        if sessions.user(request) is not None:
            return RedirectResponse("./", status_code=303)
        return _login_page(title)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        name, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
        address = request.client.host if request.client else "unknown"
        check = functools.partial(store.login, name, password, address=address)
        result = await anyio.to_thread.run_sync(check, limiter=login_limiter)
        if not result.ok:
            log.info("login refused for %r from %s: %s", name, address, result.message)
            status_code = 429 if result.retry_after_s else 401
            if _wants_html(request):
                return _login_page(title, result.message, name, status_code)
            return JSONResponse({"success": False, "message": result.message}, status_code=status_code)
        response = RedirectResponse("./", status_code=303) if _wants_html(request) else JSONResponse({"success": True})
        response.set_cookie(COOKIE, sessions.start(name), httponly=True, samesite="lax", path="/")
        return response

    @app.get("/logout")
    def logout(request: Request) -> Response:
        sessions.end(request)
        response = RedirectResponse("./", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/export/{name}.jsonl")
    async def export(name: str, request: Request, mode: str = "majority", gold: bool = False,
                     flagged: bool = False) -> Response:  # fmt: skip
        user = sessions.user(request)
        if user is None or store.role(user) != "admin":
            return JSONResponse({"detail": "Exports are for admins only."}, status_code=403)
        if name not in EXPORTS or mode not in MODES:
            return JSONResponse({"detail": f"Unknown export {name!r} or mode {mode!r}."}, status_code=404)
        try:
            rows = await anyio.to_thread.run_sync(_export_rows, store, name, mode, gold, flagged)
        except AlignmentError as err:
            return JSONResponse({"detail": str(err)}, status_code=400)
        body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        disposition = f'attachment; filename="{name}-{mode}.jsonl"'
        return Response(body, media_type="application/jsonl", headers={"Content-Disposition": disposition})

    @app.post("/gradio_api/upload")
    @app.get("/gradio_api/upload_progress")
    def no_uploads() -> Response:
        return JSONResponse({"detail": "This app takes no file uploads."}, status_code=403)

    app.add_middleware(_LoginFirst, sessions=sessions, title=title)
    gr.mount_gradio_app(app, blocks, path="/", auth_dependency=sessions.user, **mount_kwargs)
    app.state.gradio = next(route.app for route in app.routes if isinstance(route, Mount))
    return app


class RunningServer:
    """A server started in a background thread: ``url`` and ``close()``."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str) -> None:
        self.server, self.thread, self.url = server, thread, url

    def close(self) -> None:
        self.server.config.app.state.gradio.stop_event.set()  # ends the clients' heartbeat streams, as gradio does
        self.server.should_exit = True
        self.thread.join(timeout=10)


class _ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # only the main thread may; the caller owns the process
        pass


def run(app: FastAPI, host: str, port: int, block: bool, quiet: bool,
        forwarded_allow_ips: str = "127.0.0.1") -> RunningServer | None:  # fmt: skip
    """Serve ``app``; with ``block`` until interrupted (returns None), else in a thread once it listens. A request
    from one of ``forwarded_allow_ips`` (a reverse proxy) has the address its X-Forwarded-For names (uvicorn's proxy
    headers); from anywhere else the header is ignored, so a rater cannot pick the address login back-off counts."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2, proxy_headers=True,
                            forwarded_allow_ips=forwarded_allow_ips)  # fmt: skip
    if block:
        if not quiet:
            print(f"Annotation app: http://{host}:{port}/ (Ctrl+C stops it)", flush=True)
        uvicorn.Server(config).run()
        return None
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, daemon=True, name=f"annotation-ui-{port}")
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise OSError(f"the annotation app could not listen on {host}:{port} (is the port taken?)")
        thread.join(0.01)
    return RunningServer(server, thread, f"http://{host}:{port}/")
