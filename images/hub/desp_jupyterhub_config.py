# DESP Hub on Kubernetes: z2jh's hub configuration runs every file of /usr/local/etc/jupyterhub/jupyterhub_config.d/
# after its own, with `c` in scope; the hub image puts this file there. It holds no settings: the chart's `desp`
# values, mounted from the ConfigMap `desp-hub-config`, are read by desp_hub.kube_config (the same desp_hub package
# as on one machine), so the YAML carries data only and the Python lives in the image.
from desp_hub.kube_config import configure_from_chart

configure_from_chart(c)  # noqa: F821 (provided by the configuration loader)
