"""After a configuration reload the dashboard reads the live configuration: its budgets (the new budget manager's),
its models and deployments; and a key created afterwards has its budget enforced by the live dispatcher."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from switchman.gateway import ConfigReloader
from switchman.testing import FakeUpstream

from .conftest import admin_session, config_data, csrf_of, make_site

ASK = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def test_the_dashboard_follows_a_reload(upstream: FakeUpstream, own_ledger: str, tmp_path: Path) -> None:
    site = make_site(upstream, own_ledger, [])
    data = config_data(upstream, own_ledger)
    data["budgets"].append({"scope": "agent", "name": "reloaded-agent", "usd": 7, "period": "day"})
    data["models"]["fresh-model"] = {"provider": "fake", "model": "fresh-upstream-name", "input_price": 0.1,
                                     "output_price": 0.2}
    path = tmp_path / "switchman.yaml"
    path.write_text(yaml.safe_dump(data))
    reloader = ConfigReloader(site.gateway, path)
    with admin_session(site) as (admin, token):
        assert "reloaded-agent" not in admin.get("/ui/agents").text
        assert admin.portal is not None
        assert admin.portal.call(reloader.reload) is True  # on the app's own event loop, as SIGHUP's would be
        assert "reloaded-agent" in admin.get("/ui/agents").text  # the live budget manager's budgets
        assert "reloaded-agent" in admin.get("/ui/keys").text
        assert "fresh-upstream-name" in admin.get("/ui/models").text  # the live dispatcher's deployments

        made = admin.post("/ui/keys", data={"name": "after-reload", "budget_usd": "0.0000001", "period": "day",
                                            "csrf": token})
        assert made.status_code == 200, made.text
        secret = re.search(r'id="secret">(sk-sw-[^<]+)<', made.text)
        assert secret is not None
        refused = admin.post("/v1/chat/completions", json=ASK, headers={"authorization": f"Bearer {secret.group(1)}"})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded", refused.text
        assert csrf_of(admin.get("/ui/keys").text)
