"""The end-to-end tests' Python transform over `requests`: each record's
`id` is looked up with GET {url}/{id}, and the answer's text added to the
record as `looked_up`. config: {"url": "http://..."}."""

import requests

from bizon_plugin import Transform


class Enrich(Transform):
    name = "python-enrich"

    def open(self, config):
        self.url = config["url"]
        self.session = requests.Session()

    def transform(self, record):
        data = record.data
        response = self.session.get(f"{self.url}/{data['id']}", timeout=5)
        response.raise_for_status()
        data["looked_up"] = response.text
        return data
