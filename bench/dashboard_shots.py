"""Screenshots of the dashboard across waves, for the docs: ``python -m bench.dashboard_shots [--out docs]``.

Starts the local twin with three scale sets in two waves (``emulator.twin``, ``--scale-sets 3``), opens
``/api/dashboard`` in headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium),
releases the walkthrough's v1 and saves ``dashboard-waves.png`` while wave 2 goes out (wave 1 done, its two
scale sets under way). Port 80 on 127.0.9.30-32 and 127.0.90.1-9 must be free: run it in its own network
namespace, ``unshare -n bash -c 'ip link set lo up; .venv/bin/python -m bench.dashboard_shots'``.

The single-scale-set screenshots (canary, batch, rollback) come from the browser test,
``DASHBOARD_SCREENSHOTS=docs pytest tests/e2e/test_dashboard_browser.py``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from emulator.twin import EXAMPLES, TwinOptions, local_twin

V1 = "install_nginx.v1.sh"


def chromium(width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))


def phases(driver: Any) -> dict[str, str]:
    """Each scale set's current rollout phase, as the page shows it."""
    return driver.execute_script(  # type: ignore[no-any-return]
        """var out = {};
           document.querySelectorAll('[data-target]').forEach(function (t) {
             var p = t.querySelector('.current .phase');
             out[t.getAttribute('data-target')] = p ? p.getAttribute('data-phase') : '';
           });
           return out;"""
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_shots", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="the folder for the PNG (docs)")
    args = parser.parse_args(argv)
    options = TwinOptions(
        instances=3,
        bake_seconds=3,
        tick_seconds=0.5,
        upgrade_seconds=1.5,
        scale_sets=3,
        wave_bake_seconds=2,
        lb_address="127.0.9.30",
        address_base="127.0.90.1",
    )
    with local_twin(options, say=lambda line: None) as twin:
        driver = chromium(1360, 1500)
        try:
            driver.get(f"{twin.host.api_url}/dashboard?code={twin.host.function_key}&refresh=1")
            twin.upload(V1, EXAMPLES / V1)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                seen = phases(driver)
                first, *wave2 = list(seen.values())
                if first == "Succeeded" and wave2 and any(p in ("Promoting", "Baking") for p in wave2):
                    break
                time.sleep(0.3)
            else:
                raise SystemExit(f"wave 2 was not seen under way within 120 s: {phases(driver)}")
            time.sleep(1.2)  # one more refresh: the map as the phase says
            args.out.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out / "dashboard-waves.png"))
            print(f"wrote {args.out / 'dashboard-waves.png'}: {phases(driver)}")
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
