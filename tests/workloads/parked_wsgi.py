"""A WSGI app whose every request parks in one known function until the file the test names
in SCALP_PARKED_RELEASE exists: for `dump` of a uWSGI worker in the middle of a request."""
import os
import time


def parked_in_request():
    release = os.environ["SCALP_PARKED_RELEASE"]
    while not os.path.exists(release):
        time.sleep(0.05)  # parked here


def application(environ, start_response):
    parked_in_request()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"released\n"]
