"""The removal-request service: `unlearnkit serve PLAN` (docs/service.md).

Requests arrive over an authenticated HTTP API, are blocked at once by a guardrail in front of the
served model, are applied to the weights in the background by the sequential runner, verified
with the plan's suite, and stay auditable. The run folder and its SQLite ledger are the only state.

- `keys`: API keys (scrypt hashes, never stored or logged in plain text) and roles;
- `store`: the service's tables in the run's ledger (keys, submissions, timeline events);
- `intake`: a submitted body to a `ForgetRequest`, with the service's limits, one line per error;
- `blocking`: the serving guardrail's index (block on receipt, retire), saved in the run folder;
- `worker`: the one thread that applies pending requests through the runner and swaps the model;
- `serving`: the served model behind the guard (chat completions);
- `runtime`: the `Service` that holds them together; `app`: the FastAPI application;
- `logs`: JSON log lines; `page`: the status page.
"""
