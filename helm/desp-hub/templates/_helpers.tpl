{{/* Labels of DESP's own objects (the z2jh and dask-gateway charts label theirs). */}}
{{- define "desp-hub.labels" -}}
app.kubernetes.io/name: desp-hub
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* z2jh's pod labels (its objects are not prefixed by the release: one hub per namespace). */}}
{{- define "desp-hub.hubPods" -}}
app: jupyterhub
component: hub
release: {{ .Release.Name }}
{{- end }}
