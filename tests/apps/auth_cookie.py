"""A Bokeh auth module (``fleet up APP --auth-module tests/apps/auth_cookie.py``) for the tests.

Its login page sets a plain ``user`` cookie (``/login?name=alice``) and sends the browser back
where it came from; ``get_user`` lets in whoever has the cookie. The app reads the user from
``curdoc().session_context.request.cookies``. Not a real login: it shows the hooks work
through fleet on every worker.
"""

from tornado.web import RequestHandler

login_url = "/login"
logout_url = "/logout"


def get_user(request_handler: RequestHandler) -> str | None:
    return request_handler.get_cookie("user")


class LoginHandler(RequestHandler):
    def get(self) -> None:
        self.set_cookie("user", self.get_argument("name", "alice"))
        self.redirect(self.get_argument("next", "/"))


class LogoutHandler(RequestHandler):
    def get(self) -> None:
        self.clear_cookie("user")
        self.redirect("/")
