"""WSGI entry point for the development CKAN (the ckan wheel ships none).

gunicorn imports ``application`` from here; the config file comes from ``CKAN_INI``.
Run from scripts/ckan-dev, which sets CKAN_INI and binds gunicorn to 127.0.0.1.
"""

import os
from logging.config import fileConfig

from ckan.cli import CKANConfigLoader
from ckan.config.middleware import make_app

_ini = os.path.abspath(os.environ["CKAN_INI"])
fileConfig(_ini, disable_existing_loggers=False)
application = make_app(CKANConfigLoader(_ini).get_config())
