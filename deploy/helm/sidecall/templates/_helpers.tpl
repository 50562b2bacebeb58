{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "sidecall.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sidecall.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sidecall.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "sidecall.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sidecall.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sidecall.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sidecall.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sidecall.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sidecall.configMapName" -}}
{{- default (printf "%s-config" (include "sidecall.fullname" .)) .Values.config.existingConfigMap -}}
{{- end -}}

{{- define "sidecall.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Whether the chart runs sidecall as its own Deployment. */}}
{{- define "sidecall.standalone" -}}
{{- if or (eq .Values.mode "standalone") (and (eq .Values.mode "istio-sidecar") (eq .Values.istio.target "service")) -}}true{{- end -}}
{{- end -}}

{{- define "sidecall.validate" -}}
{{- if not (has .Values.mode (list "standalone" "istio-sidecar")) -}}
{{- fail (printf "mode must be standalone or istio-sidecar, got %q" .Values.mode) -}}
{{- end -}}
{{- if eq .Values.mode "istio-sidecar" -}}
{{- if not (has .Values.istio.target (list "sidecar" "service")) -}}
{{- fail (printf "istio.target must be sidecar or service, got %q" .Values.istio.target) -}}
{{- end -}}
{{- if not (has .Values.istio.context (list "SIDECAR_INBOUND" "GATEWAY")) -}}
{{- fail (printf "istio.context must be SIDECAR_INBOUND or GATEWAY, got %q" .Values.istio.context) -}}
{{- end -}}
{{- if not .Values.istio.workloadSelector -}}
{{- fail "istio.workloadSelector is required: an EnvoyFilter without one patches every proxy in the namespace" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.envoyGateway.enabled (ne .Values.mode "standalone") -}}
{{- fail "envoyGateway.enabled needs mode=standalone" -}}
{{- end -}}
{{- if and (not .Values.config.existingConfigMap) (not .Values.config.content) -}}
{{- fail "config.content or config.existingConfigMap is required" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.envoy.podSelector) (not .Values.networkPolicy.envoy.namespaceSelector) -}}
{{- fail "networkPolicy.enabled needs networkPolicy.envoy.podSelector or namespaceSelector: the pods allowed to call ext_proc" -}}
{{- end -}}
{{- if not (has .Values.otel.protocol (list "grpc" "http/protobuf")) -}}
{{- fail (printf "otel.protocol must be grpc or http/protobuf, got %q" .Values.otel.protocol) -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled .Values.podDisruptionBudget.minAvailable .Values.podDisruptionBudget.maxUnavailable -}}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" -}}
{{- end -}}
{{- end -}}

{{/*
The sidecall container. Used by the Deployment and, in istio-sidecar mode, rendered into the
patch users apply to their app. $listen is the gRPC address: 0.0.0.0 in its own pod, 127.0.0.1
beside an app (only the local Envoy may call it).
*/}}
{{- define "sidecall.container" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
name: sidecall
image: {{ include "sidecall.image" $root | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
args:
  - serve
  - --config=/etc/sidecall/{{ $v.config.key }}
  - --admin-config={{ if $v.adminConfig }}true{{ else }}false{{ end }}
  {{- if $v.envoyGateway.enabled }}
  {{- /* no max_message_timeout there: Envoy's one timer must cover every budget */}}
  - --envoy-message-timeout={{ $v.envoyGateway.messageTimeout }}
  - --envoy-max-message-timeout={{ $v.envoyGateway.messageTimeout }}
  {{- else }}
  - --envoy-message-timeout={{ $v.istio.messageTimeout }}
  - --envoy-max-message-timeout={{ $v.istio.maxMessageTimeout }}
  {{- end }}
  {{- range $v.extraArgs }}
  - {{ . | quote }}
  {{- end }}
env:
  - name: SIDECALL_GRPC_LISTEN
    value: {{ printf "%s:%d" .listen (int $v.grpcPort) | quote }}
  - name: SIDECALL_ADMIN_LISTEN
    value: {{ printf "0.0.0.0:%d" (int $v.adminPort) | quote }}
  - name: SIDECALL_LOG_LEVEL
    value: {{ $v.log.level | quote }}
  - name: SIDECALL_LOG_FORMAT
    value: {{ $v.log.format | quote }}
  - name: SIDECALL_DRAIN_DELAY
    value: {{ $v.drainDelay | quote }}
  - name: SIDECALL_DRAIN_TIMEOUT
    value: {{ $v.drainTimeout | quote }}
  - name: SIDECALL_UNTRUSTED_LUA
    value: {{ $v.untrustedLua | quote }}
  {{- with $v.otel }}
  {{- if .endpoint }}
  - name: OTEL_EXPORTER_OTLP_ENDPOINT
    value: {{ .endpoint | quote }}
  - name: OTEL_EXPORTER_OTLP_PROTOCOL
    value: {{ .protocol | quote }}
  {{- with .sampler }}
  - name: OTEL_TRACES_SAMPLER
    value: {{ . | quote }}
  {{- end }}
  {{- with .samplerArg }}
  - name: OTEL_TRACES_SAMPLER_ARG
    value: {{ . | quote }}
  {{- end }}
  {{- end }}
  {{- end }}
  {{- range $v.secrets.env }}
  - name: {{ .name }}
    valueFrom:
      secretKeyRef:
        name: {{ .secretName }}
        key: {{ .key }}
  {{- end }}
  {{- with $v.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $v.secrets.envFrom }}
envFrom:
  {{- range . }}
  - secretRef:
      name: {{ . }}
  {{- end }}
{{- end }}
ports:
  - name: grpc
    containerPort: {{ $v.grpcPort }}
    protocol: TCP
  - name: admin
    containerPort: {{ $v.adminPort }}
    protocol: TCP
{{- with $v.livenessProbe }}
livenessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.readinessProbe }}
readinessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.startupProbe }}
startupProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
volumeMounts:
  # A directory mount, not subPath: the kubelet can then swap the ConfigMap in place and
  # sidecall's file watch reloads it.
  - name: sidecall-config
    mountPath: /etc/sidecall
    readOnly: true
  - name: sidecall-tmp
    mountPath: /tmp
  {{- if $v.secrets.files.secretName }}
  - name: sidecall-secrets
    mountPath: {{ $v.secrets.files.mountPath }}
    readOnly: true
  {{- end }}
{{- end -}}

{{- define "sidecall.volumes" -}}
- name: sidecall-config
  configMap:
    name: {{ include "sidecall.configMapName" . }}
- name: sidecall-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- if .Values.secrets.files.secretName }}
- name: sidecall-secrets
  secret:
    secretName: {{ .Values.secrets.files.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}
