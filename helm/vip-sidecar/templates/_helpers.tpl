{{/* Names and labels */}}
{{- define "vip-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vip-sidecar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "vip-sidecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vip-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vip-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vip-sidecar.labels" -}}
helm.sh/chart: {{ include "vip-sidecar.chart" . }}
{{ include "vip-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "vip-sidecar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vip-sidecar.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vip-sidecar.secretName" -}}
{{- default (include "vip-sidecar.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "vip-sidecar.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}

{{/* Paths inside the container */}}
{{- define "vip-sidecar.configDir" -}}/etc/vip-sidecar/config{{- end }}
{{- define "vip-sidecar.secretDir" -}}/etc/vip-sidecar/secret{{- end }}
{{- define "vip-sidecar.scriptDir" -}}/etc/vip-sidecar/scripts{{- end }}
{{- define "vip-sidecar.runDir" -}}/run/vip-sidecar{{- end }}

{{/*
The config file: `config` (daemon fields and VIP defaults) plus `vips`, with every
password replaced by a passfile path into the mounted Secret. Only paths reach the
ConfigMap, never a password.
*/}}
{{- define "vip-sidecar.configFile" -}}
{{- $secretDir := include "vip-sidecar.secretDir" . -}}
{{- $cfg := deepCopy (default dict .Values.config) -}}
{{- $_ := set $cfg "passfile" (printf "%s/%s" $secretDir .Values.existingSecretKey) -}}
{{- $vips := list -}}
{{- range $vip := .Values.vips -}}
{{- $entry := omit $vip "passwordKey" -}}
{{- if $vip.passwordKey -}}
{{- $_ := set $entry "passfile" (printf "%s/%s" $secretDir $vip.passwordKey) -}}
{{- end -}}
{{- $vips = append $vips $entry -}}
{{- end -}}
{{- $_ := set $cfg "vips" $vips -}}
{{- toYaml $cfg -}}
{{- end }}

{{/*
Checks the schema cannot express; each fails the install with the fix in the message.
*/}}
{{- define "vip-sidecar.validate" -}}
{{- $shutdown := default 10 .Values.config.shutdown_timeout -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) (float64 $shutdown) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than config.shutdown_timeout (%v): the pod must outlive the graceful release of its VIPs" .Values.terminationGracePeriodSeconds $shutdown) -}}
{{- end -}}
{{- $keys := list .Values.existingSecretKey -}}
{{- range $k, $_ := .Values.extraPasswords -}}{{- $keys = append $keys $k -}}{{- end -}}
{{- $seen := dict -}}
{{- $defaultIface := default "" .Values.config.interface -}}
{{- range $i, $vip := .Values.vips -}}
{{- if and $vip.passwordKey (not $.Values.existingSecret) (not (has $vip.passwordKey $keys)) -}}
{{- fail (printf "vips[%d].passwordKey %q is not a key of the chart's Secret; add it to extraPasswords (or use existingSecret)" $i $vip.passwordKey) -}}
{{- end -}}
{{- $iface := default $defaultIface $vip.interface -}}
{{- if not $iface -}}
{{- fail (printf "vips[%d]: no interface; set config.interface or vips[%d].interface" $i $i) -}}
{{- end -}}
{{- $key := printf "%s/%v" $iface $vip.vhid -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "vips[%d]: vhid %v on %s is already used by vips[%v]" $i $vip.vhid $iface (get $seen $key)) -}}
{{- end -}}
{{- $_ := set $seen $key $i -}}
{{- $providers := default $.Values.config.providers $vip.providers -}}
{{- range $p := $providers -}}
{{- if and (kindIs "map" $p) (eq (toString $p.name) "kubernetes") $p.label_node (not $.Values.kubernetes.labelNode) -}}
{{- fail (printf "vips[%d] uses the kubernetes provider with label_node; set kubernetes.labelNode=true so the chart grants get/patch on nodes" $i) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}
