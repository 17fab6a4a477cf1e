"""The end-to-end tests' Python destination over the libraries authors use,
unchanged: `requests`, `urllib3`, `urllib.request` and `httpx`, each sent by
the host over wasi:http (bizon_plugin._compat).

plugin_config:
- {"url": U, "client": "requests"|"urllib3"|"urllib", "timeout": S}: POSTs
  each batch's records to U as one JSON array and raises for a status >= 400
  (the SDK retries 408, 429 and 5xx, after Retry-After).
- {"tour": BASE}: walks the API surface of requests and the others against
  BASE (sessions, auth, params, each method, bodies, streaming, redirects,
  errors) and logs one line per step, `tour NAME: ...`.
"""

import json
import logging
import socket
import urllib.error
import urllib.request

import httpx
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from bizon_plugin import Destination

log = logging.getLogger("http")


class Http(Destination):
    name = "python-http"

    def open(self, config):
        self.config = config
        self.session = requests.Session()
        self.pool = urllib3.PoolManager()

    def write_records(self, batch):
        if "tour" in self.config:
            return self.tour(self.config["tour"])
        url, client = self.config["url"], self.config.get("client", "requests")
        timeout = self.config.get("timeout", 10)
        body = "[" + ",".join(batch.column("source_data")) + "]"
        headers = {"content-type": "application/json", "idempotency-key": f"{batch.destination_id}-{batch.sequence}"}
        if client == "requests":
            self.session.post(url, data=body, headers=headers, timeout=timeout).raise_for_status()
        elif client == "urllib3":
            response = self.pool.request("POST", url, body=body, headers=headers, timeout=timeout, retries=False)
            if response.status >= 400:
                raise urllib.error.HTTPError(url, response.status, response.reason, response.headers, None)
        else:
            request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        return None

    def tour(self, base):
        def step(name, run):
            try:
                log.info("tour %s: %s", name, run())
            except Exception as e:  # noqa: BLE001 - the test reads what each step raised
                log.info("tour %s: raised %s.%s: %s", name, type(e).__module__, type(e).__name__, e)

        s = requests.Session()
        s.headers["x-team"] = "data"
        s.auth = ("ada", "s3cret")
        s.params = {"v": "1"}
        step("get", lambda: s.get(f"{base}/get", params={"q": "a b"}).text)
        step("json", lambda: s.post(f"{base}/json", json={"n": 1}).json())
        step("form", lambda: s.post(f"{base}/form", data={"k": "v w"}).status_code)
        step("upload", lambda: s.post(f"{base}/form", files={"f": ("a.txt", b"file body")}).status_code)
        step("put", lambda: s.put(f"{base}/put", data=b"raw bytes").status_code)
        step("delete", lambda: requests.delete(f"{base}/delete").status_code)
        step("head", lambda: (lambda r: f"{r.status_code} {r.headers['content-type']} {r.content!r}")(s.head(f"{base}/get")))
        step("stream", lambda: sum(len(c) for c in s.get(f"{base}/big", stream=True).iter_content(1000)))
        step("gzip", lambda: s.get(f"{base}/gzip").text)
        step("redirect", lambda: (lambda r: f"{r.url} after {[h.status_code for h in r.history]}")(s.get(f"{base}/redirect")))
        step("not-found", lambda: requests.get(f"{base}/missing").raise_for_status())
        step("timeout", lambda: requests.get(f"{base}/slow", timeout=0.3).text)
        step("denied", lambda: requests.get("http://127.0.0.1:9/").text)
        # The server speaks plain HTTP: the host's TLS handshake fails.
        step("https", lambda: requests.get(base.replace("http://", "https://") + "/get", timeout=5).text)
        retrying = requests.Session()
        retrying.mount("http://", HTTPAdapter(max_retries=Retry(total=2, status_forcelist=[503], backoff_factor=0)))
        step("retry", lambda: retrying.get(f"{base}/flaky").text)
        step("urllib", lambda: urllib.request.urlopen(f"{base}/get?via=urllib", timeout=5).read().decode())
        step("urllib-404", lambda: urllib.request.urlopen(f"{base}/missing"))
        step("urllib3", lambda: urllib3.request("GET", f"{base}/get?via=urllib3").data.decode())
        step("httpx", lambda: httpx.get(f"{base}/get?via=httpx").text)
        step("httpx-json", lambda: httpx.Client(headers={"x-team": "data"}).post(f"{base}/json", json={"h": 2}).json())
        step("httpx-timeout", lambda: httpx.get(f"{base}/slow", timeout=0.3).text)
        step("httpx-denied", lambda: httpx.get("http://127.0.0.1:9/").text)
        step("lookup", lambda: socket.getaddrinfo("example.com", 80))
        return None
