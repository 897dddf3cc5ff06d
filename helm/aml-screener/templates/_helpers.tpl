{{/* Names ------------------------------------------------------------------------------------------- */}}
{{- define "aml-screener.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aml-screener.fullname" -}}
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

{{- define "aml-screener.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aml-screener.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels: the common set on every object; the selector set picks one component's pods. ------------- */}}
{{- define "aml-screener.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aml-screener
{{- end -}}

{{- define "aml-screener.labels" -}}
app.kubernetes.io/name: {{ include "aml-screener.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "aml-screener.commonLabels" . }}
{{- end -}}

{{- define "aml-screener.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aml-screener.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: screener
{{- end -}}

{{- define "aml-screener.syncSelectorLabels" -}}
app.kubernetes.io/name: {{ include "aml-screener.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: watchlist-sync
{{- end -}}

{{- define "aml-screener.reportingSelectorLabels" -}}
app.kubernetes.io/name: {{ include "aml-screener.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: reporting
{{- end -}}

{{/* The history's pods: (dict "root" $ "role" "indexer"|"lookback"|"retention"). */}}
{{- define "aml-screener.historySelectorLabels" -}}
app.kubernetes.io/name: {{ include "aml-screener.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: history-{{ .role }}
{{- end -}}

{{/* Image: repository[:tag][@digest]; the digest, when given, decides what runs. --------------------- */}}
{{- define "aml-screener.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Grace period: the drain bound plus 10 s to commit offsets, leave the group and flush the producer.
     Computed from the one value, so the kubelet's SIGKILL can never land inside a drain. -------------- */}}
{{- define "aml-screener.terminationGracePeriodSeconds" -}}
{{- add (int .Values.shutdownTimeoutSeconds) 10 -}}
{{- end -}}

{{- define "aml-screener.secretName" -}}
{{- default (include "aml-screener.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "aml-screener.createSecret" -}}
{{- if and (not .Values.secret.existingSecret) .Values.secret.values -}}true{{- end -}}
{{- end -}}

{{- define "aml-screener.syncSecretName" -}}
{{- default (printf "%s-sync" (include "aml-screener.fullname" .)) .Values.watchlistSync.existingSecret -}}
{{- end -}}

{{- define "aml-screener.createSyncSecret" -}}
{{- if and (not .Values.watchlistSync.existingSecret) .Values.watchlistSync.secretValues -}}true{{- end -}}
{{- end -}}

{{/* Pod- and container-level security: non-root (the image's uid), read-only root filesystem, no
     capabilities, no privilege escalation, the runtime's default seccomp profile. Not configurable on purpose. */}}
{{- define "aml-screener.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "aml-screener.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Environment of both workloads: the settings ConfigMap, then the Secret (when there is one). --------- */}}
{{- define "aml-screener.envFrom" -}}
- configMapRef:
    name: {{ include "aml-screener.fullname" . }}-config
{{- if or .Values.secret.existingSecret .Values.secret.values }}
- secretRef:
    name: {{ include "aml-screener.secretName" . }}
{{- end }}
{{- end -}}

{{/* The sync job's pod template (shared by the CronJob and the install-time Job). ----------------------- */}}
{{- define "aml-screener.syncPodSpec" -}}
metadata:
  labels:
    {{- include "aml-screener.commonLabels" . | nindent 4 }}
    {{- include "aml-screener.syncSelectorLabels" . | nindent 4 }}
  annotations:
    checksum/sources: {{ .Values.watchlistSync.sources | sha256sum }}
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "aml-screener.serviceAccountName" . }}
  automountServiceAccountToken: false
  securityContext:
    {{- include "aml-screener.podSecurityContext" . | nindent 4 }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: watchlist-sync
      image: {{ include "aml-screener.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["watchlist", "sync", "--no-progress", "/etc/aml-screener/sync/sources.toml"]
      envFrom:
        {{- include "aml-screener.envFrom" . | nindent 8 }}
        {{- if or .Values.watchlistSync.existingSecret .Values.watchlistSync.secretValues }}
        - secretRef:
            name: {{ include "aml-screener.syncSecretName" . }}
        {{- end }}
      {{- with .Values.watchlistSync.env }}
      # The sync's own settings (e.g. the Redis writer user) override the shared ConfigMap's.
      env:
        {{- range $name, $value := . }}
        - name: {{ $name }}
          value: {{ $value | toString | quote }}
        {{- end }}
      {{- end }}
      securityContext:
        {{- include "aml-screener.containerSecurityContext" . | nindent 8 }}
      resources:
        {{- toYaml .Values.watchlistSync.resources | nindent 8 }}
      volumeMounts:
        - name: sources
          mountPath: /etc/aml-screener/sync
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- with .Values.watchlistSync.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: sources
      configMap:
        name: {{ include "aml-screener.fullname" . }}-sync-sources
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.watchlistSync.tmpSizeLimit }}
    {{- with .Values.watchlistSync.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{- define "aml-screener.apiSelectorLabels" -}}
app.kubernetes.io/name: {{ include "aml-screener.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
{{- end -}}

{{/* The Secret holding the pre-screen API's keys file (keys.json: SHA-256 hashes, never keys). */}}
{{- define "aml-screener.apiKeysSecret" -}}
{{- .Values.api.keys.existingSecret | default (printf "%s-api-keys" (include "aml-screener.fullname" .)) -}}
{{- end -}}
