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
{{/* "true" when a VIP is IPv6: srcip then comes from status.hostIPs (both families) */}}
{{- define "vip-sidecar.hasIPv6" -}}
{{- range .Values.vips }}{{ if contains ":" (toString .addr) }}true{{ end }}{{ end }}
{{- end }}

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
{{- range $p := include "vip-sidecar.kubernetesProviders" (dict "vip" $vip "root" $) | fromJsonArray -}}
{{- $key := "" -}}
{{- if $p.label_key -}}{{- $key = toString $p.label_key -}}{{- end -}}
{{- if and $key (not (hasPrefix $.Values.kubernetes.labelPrefix $key)) -}}
{{- fail (printf "vips[%d]: kubernetes label_key %q is not under kubernetes.labelPrefix %q; the admission policy would refuse every label patch" $i $key $.Values.kubernetes.labelPrefix) -}}
{{- end -}}
{{- if and (not $key) (ne $.Values.kubernetes.labelPrefix "vip-sidecar.io/") -}}
{{- fail (printf "vips[%d]: the kubernetes provider's default label key is under vip-sidecar.io/, not kubernetes.labelPrefix %q; set label_key" $i $.Values.kubernetes.labelPrefix) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Release.Namespace "kube-system") (not .Values.kubernetes.allowKubeSystem) -}}
{{- fail "refusing to install into kube-system: the ServiceAccount may patch Pods and create Leases in its namespace, and kube-system holds the control plane's Pods and Leases; use a namespace of its own (or set kubernetes.allowKubeSystem=true)" -}}
{{- end -}}
{{- end }}

{{/*
The kubernetes provider entries of a VIP (its own providers, else config.providers),
as a JSON list of option maps ({} for a bare "kubernetes").
*/}}
{{- define "vip-sidecar.kubernetesProviders" -}}
{{- $vip := .vip -}}
{{- $providers := default .root.Values.config.providers $vip.providers -}}
{{- $found := list -}}
{{- range $p := $providers -}}
{{- if and (kindIs "string" $p) (eq $p "kubernetes") -}}
{{- $found = append $found dict -}}
{{- else if and (kindIs "map" $p) (eq (toString $p.name) "kubernetes") -}}
{{- $found = append $found $p -}}
{{- end -}}
{{- end -}}
{{- toJson $found -}}
{{- end }}

{{/*
The Lease names the kubernetes provider uses, as a JSON list: its lease_name option,
else "vip-sidecar-" + the VIP name made a DNS-1123 name (vip_sidecar.providers.kubernetes.lease
.dns_name; tests/integration/test_kubernetes_admission.py compares the two). The Role
grants get/update on exactly these.
*/}}
{{- define "vip-sidecar.leaseNames" -}}
{{- $names := list -}}
{{- range $vip := .Values.vips -}}
{{- $vipName := toString (default (printf "vhid%v" $vip.vhid) $vip.name) -}}
{{- range $p := include "vip-sidecar.kubernetesProviders" (dict "vip" $vip "root" $) | fromJsonArray -}}
{{- $name := "" -}}
{{- if and (kindIs "map" $p) $p.lease_name -}}
{{- $name = toString $p.lease_name -}}
{{- else -}}
{{- $slug := regexReplaceAll "[^a-z0-9-]+" (lower $vipName) "-" | trimAll "-" | default "vip" -}}
{{- $name = printf "vip-sidecar-%s" $slug | trunc 253 | trimAll "-" -}}
{{- end -}}
{{- if not (has $name $names) -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end }}

{{/* The ServiceAccount's user name, as the apiserver authenticates its token. */}}
{{- define "vip-sidecar.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "vip-sidecar.serviceAccountName" . }}
{{- end }}
