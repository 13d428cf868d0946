"""Command line of the sandbox accounting service.

    python -m desp_sandbox.accounting --ip 127.0.0.1 --port 8192 --data-dir /var/tmp/desp \\
        --jwks-url http://127.0.0.1:8180/realms/desp/protocol/openid-connect/certs \\
        [--issuer http://127.0.0.1:8180/realms/desp] [--default-mode advance] [--default-balance 100] \\
        [--default-monthly-quota 0]

The ledger lives in DATA_DIR/accounting/ledger.sqlite (SQLite, WAL mode; created on first use, reused after a
restart). The line `desp_sandbox.accounting ready at http://IP:PORT` is printed once GET /api/status answers.
SIGTERM or SIGINT stop it cleanly (exit status 0). `--exit-after-commit N` is a test hook: the process ends with
`os._exit(3)` right after committing its Nth new transaction, before answering the request.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..serving import serve, stop_on_sigterm
from .ledger import MODES, InvalidInput, Ledger, Plan, parse_amount

log = logging.getLogger("desp_sandbox.accounting")


def _amount(field):
    def parse(text: str) -> int:
        try:
            return parse_amount(text, field, allow_zero=True)
        except InvalidInput as error:
            raise argparse.ArgumentTypeError(error.message) from None

    return parse


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m desp_sandbox.accounting",
        description="Run the DESP sandbox accounting service: DCU balances, monthly quotas and an append-only "
        "transaction ledger with idempotency keys, on SQLite (contract: openapi.yaml, served at /openapi.json).",
        epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ip", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, required=True, help="TCP port of the API")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="state directory; the ledger is DATA_DIR/accounting/ledger.sqlite")
    parser.add_argument("--jwks-url", required=True, help="JWKS of the IdP whose tokens the API accepts")
    parser.add_argument("--issuer", default=None, help="required `iss` of those tokens (default: not checked)")
    parser.add_argument("--default-mode", choices=MODES, default="advance",
                        help="payment mode of a new account: advance (DCU balance) or arrears (monthly quota) "
                        "(default: %(default)s)")
    parser.add_argument("--default-balance", type=_amount("--default-balance"), default=100_000, metavar="DCU",
                        help="opening balance of a new account in DCU, recorded as a credit (default: 100)")
    parser.add_argument("--default-monthly-quota", type=_amount("--default-monthly-quota"), default=0, metavar="DCU",
                        help="monthly quota of a new account in DCU, for arrears mode (default: 0)")
    parser.add_argument("--exit-after-commit", type=int, default=None, metavar="N",
                        help="test hook: exit (status 3) right after committing the Nth new transaction, "
                        "before answering it")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()  # until uvicorn installs its own handlers
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ledger = None
    try:
        from desp_sandbox.catalogue.auth import TokenVerifier

        from .app import create_app

        plan = Plan(mode=args.default_mode, balance=args.default_balance, monthly_quota=args.default_monthly_quota)
        ledger = Ledger(args.data_dir.resolve() / "accounting" / "ledger.sqlite", plan)
        app = create_app(ledger, TokenVerifier(args.jwks_url, args.issuer), args.exit_after_commit)
        started = serve(app, args.ip, args.port, "/api/status",
                        f"desp_sandbox.accounting ready at http://{args.ip}:{args.port}")  # fmt: skip
        return 0 if started else 1
    except KeyboardInterrupt:
        return 0
    finally:
        if ledger is not None:
            ledger.close()


if __name__ == "__main__":
    sys.exit(main())
