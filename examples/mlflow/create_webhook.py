"""Register ckptscan serve as the MLflow model-registry webhook for new model versions.

    MLFLOW_TRACKING_URI=https://mlflow.example.com CKPTSCAN_MLFLOW_SECRET=... \
        python examples/mlflow/create_webhook.py https://ckptscan.example.com

ckptscan serve must run with --allow models:/, MLFLOW_TRACKING_URI pointing at the same
server (it writes the ckptscan.* tags through MLflow's REST API) and the same
CKPTSCAN_MLFLOW_SECRET. MLflow (>= 3.3, SQL backend) refuses http:// and private
addresses as webhook URLs unless its server runs with MLFLOW_WEBHOOK_ALLOWED_SCHEMES and
MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS set: use https in production.
"""

import os
import sys

from mlflow import MlflowClient


def main() -> None:
    base = sys.argv[1].rstrip("/")
    client = MlflowClient()  # MLFLOW_TRACKING_URI
    hook = client.create_webhook(
        name="ckptscan",
        url=f"{base}/hooks/mlflow",
        events=["model_version.created"],
        secret=os.environ["CKPTSCAN_MLFLOW_SECRET"],
        description="ckptscan: scan new model versions, tag ckptscan.verdict",
    )
    print(f"webhook {hook.webhook_id} -> {hook.url}")
    result = client.test_webhook(hook.webhook_id)  # a signed example delivery
    print(f"test delivery: HTTP {result.response_status}")


if __name__ == "__main__":
    main()
