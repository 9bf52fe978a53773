{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "notihub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the components append "-api", "-socket", "-ingest". */}}
{{- define "notihub.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "notihub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels; call with (dict "root" $ "component" "api"). */}}
{{- define "notihub.labels" -}}
helm.sh/chart: {{ include "notihub.chart" .root }}
{{ include "notihub.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: notihub
{{- end }}

{{- define "notihub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "notihub.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "notihub.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Checks that fail the rendering with a message saying what to change.
*/}}
{{- define "notihub.validate" -}}
{{- if not .Values.existingSecret }}
{{- fail "existingSecret must name the Secret that holds NOTIHUB_JWT_SECRET, NOTIHUB_SERVICE_KEYS, NOTIHUB_METRICS_KEY, NOTIHUB_MONGO_URL and NOTIHUB_REDIS_URL (see secretKeys)" }}
{{- end }}
{{- range $var := list "NOTIHUB_MONGO_URL" "NOTIHUB_REDIS_URL" }}
{{- if not (index $.Values.secretKeys $var) }}
{{- fail (printf "secretKeys.%s must name the key of %s in the Secret %s: the processes have no other way to find it" $var $var $.Values.existingSecret) }}
{{- end }}
{{- end }}
{{- if not .Values.kafka.bootstrap }}
{{- fail "kafka.bootstrap must list the Kafka brokers (host:port[,host:port…])" }}
{{- end }}
{{- $drain := int .Values.socket.drainSeconds }}
{{- $grace := int .Values.socket.terminationGracePeriodSeconds }}
{{- if lt $grace (add $drain 10) }}
{{- fail (printf "socket.terminationGracePeriodSeconds (%d) must be at least socket.drainSeconds (%d) + 10: a worker drains its sockets after SIGTERM and then shuts down, and must not be killed before" $grace $drain) }}
{{- end }}
{{- if .Values.ingest.enabled }}
{{- $replicas := int .Values.ingest.replicas }}
{{- $partitions := int .Values.ingest.partitions }}
{{- if lt $partitions 1 }}
{{- fail "ingest.partitions must be the number of partitions of the topic notihub.events (at least 1)" }}
{{- end }}
{{- if gt $replicas $partitions }}
{{- fail (printf "ingest.replicas (%d) is more than ingest.partitions (%d): Kafka gives each partition of notihub.events to one consumer of the group, so the other workers would sit idle; add partitions to the topic first, then raise ingest.partitions" $replicas $partitions) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment of every process: the plain settings, then the secrets. Call with
(dict "root" $ "kafka" true) for the Kafka clients (the API, the ingest workers); the socket
workers never talk to Kafka.
*/}}
{{- define "notihub.env" -}}
{{- $root := .root }}
- name: NOTIHUB_ENV
  value: production
- name: NOTIHUB_MONGO_DB
  value: {{ $root.Values.mongodb.database | quote }}
{{- if .kafka }}
- name: NOTIHUB_KAFKA_BOOTSTRAP
  value: {{ $root.Values.kafka.bootstrap | quote }}
{{- end }}
{{- range $name, $value := $root.Values.env }}
{{- if ne $name "NOTIHUB_ENV" }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- range $name, $key := $root.Values.secretKeys }}
{{- if $key }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.existingSecret }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The container command of a worker. Each process needs an id of its own (it names the process in
the metrics shared through Redis and, for the ingest workers, the Kafka client), while every pod
of a Deployment gets the same command: the id is the prefix and the pod's IP as a number.
Call with (dict "module" "socket_server" "port" 8200 "prefix" "w").
*/}}
{{- define "notihub.workerCommand" -}}
- /bin/sh
- -c
- >-
  exec python -m {{ .module }} --host 0.0.0.0 --port {{ .port }}
  --worker-id "{{ .prefix }}$(python -c 'import ipaddress, os; print(int(ipaddress.ip_address(os.environ["POD_IP"])))')"
{{- end }}

{{/* The downward-API variable that notihub.workerCommand reads. */}}
{{- define "notihub.podIPEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end }}

{{/* Pod annotations: Prometheus scraping on the given port, then podAnnotations. */}}
{{- define "notihub.podAnnotations" -}}
{{- if .root.Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every component. */}}
{{- define "notihub.podSettings" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  # The root filesystem is read-only; Python's temporary files go here.
  - name: tmp
    emptyDir: {}
{{- end }}

{{/* Container-level settings shared by every component. */}}
{{- define "notihub.containerSettings" -}}
image: {{ include "notihub.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}
