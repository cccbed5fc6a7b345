from support.controller_fixtures import *  # noqa: F401,F403
