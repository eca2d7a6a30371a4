"""Small port-app-config mappings that several test modules map items with."""

from __future__ import annotations


def resource(selector: str = "'true'", title: str | None = None, kind: str = "thing") -> str:
    """One resource of `kind`: identifier `.id`, blueprint `kind`, and a constant title if given."""
    text = (f"  - kind: {kind}\n    selector:\n      query: {selector}\n    port:\n      entity:\n        mappings:\n"
            f"          identifier: .id\n          blueprint: '\"{kind}\"'\n")
    return text + (f"          title: '\"{title}\"'\n" if title else "")


ONE_RESOURCE = "resources:\n" + resource()
#: one kind mapped by two resources, by item type: an item of type a is only resource a's
TWO_RESOURCES = "resources:\n" + resource('.type == "a"', "from a") + resource('.type == "b"', "from b")

#: one pull-request resource, its identifier from `.id`: the config tests' mapping
PULL_REQUESTS = """\
resources:
  - kind: pull-request
    port:
      entity:
        mappings:
          identifier: .id | tostring
          blueprint: '"pr"'
"""
