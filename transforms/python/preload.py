"""The standard-library modules a transform may `import`.

The component has no filesystem while records flow: componentize-py
snapshots the interpreter after this package's top level ran, so only
modules imported by then can be imported by a transform. This imports the
standard library's data-shaping modules (and `os` and `socket`, so that a
transform trying them meets the sandbox, not an ImportError); a module that
does not load under WASI is skipped. `AVAILABLE` lists what loaded, and
`bizon-host` names it when a transform's import fails.

Bizon's environment also has python-dateutil, pytz and tzdata, which
transforms use for dates and time zones; they are bundled
(requirements.txt) and imported here too. Time-zone libraries read a zone's
file the first time it is asked for, and there are no files at run time, so
every zone is loaded now and kept: their caches answer later.

Left out on purpose: modules for processes, threads, terminals, GUIs,
debuggers and packaging, none of which can work in the sandbox.
"""

import importlib

MODULES = """
abc argparse array ast base64 binascii bisect bz2 calendar cmath codecs collections
collections.abc colorsys configparser contextlib contextvars copy csv dataclasses
datetime decimal difflib email email.charset email.header email.message email.parser
email.policy email.utils encodings.idna enum errno fnmatch fractions functools
getopt gettext glob graphlib gzip hashlib heapq hmac html html.entities html.parser
http http.cookies inspect io ipaddress itertools json keyword linecache locale
logging lzma math mimetypes numbers operator os pathlib pickle posixpath pprint
queue quopri random re reprlib secrets shlex socket statistics string stringprep
struct textwrap time tomllib traceback types typing unicodedata urllib urllib.parse
uuid warnings weakref xml xml.dom.minidom xml.etree.ElementTree zipfile zlib zoneinfo
dateutil dateutil.easter dateutil.parser dateutil.relativedelta dateutil.rrule dateutil.tz
dateutil.zoneinfo pytz six tzdata
""".split()

AVAILABLE = []
for _name in MODULES:
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001 (a module that cannot load under WASI is left out)
        continue
    AVAILABLE.append(_name)


def _zones():
    kept = []
    try:
        import zoneinfo

        kept += [zoneinfo.ZoneInfo(key) for key in sorted(zoneinfo.available_timezones())]
    except Exception:  # noqa: BLE001 (no tzdata: ZoneInfo answers as it would anywhere without it)
        pass
    try:
        import pytz

        kept += [pytz.timezone(name) for name in pytz.all_timezones]
    except Exception:  # noqa: BLE001
        pass
    try:
        from dateutil.zoneinfo import get_zonefile_instance

        # dateutil.tz.gettz falls back to this instance when no system zone file exists.
        kept.append(get_zonefile_instance())
    except Exception:  # noqa: BLE001
        pass
    return kept


# ZoneInfo keeps weak references: these strong ones keep every zone in its cache.
ZONES = _zones()
