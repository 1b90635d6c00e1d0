{{- /*
Built-in text/template functions only (no sprig, no include): CI renders the
chart with Go's text/template itself (tests/deploy/render_kit.mjs).
*/ -}}

{{- /* Every object's name: nameOverride, else the release name. */ -}}
{{- define "mtlsd-sidecar.name" -}}
{{ or .Values.nameOverride .Release.Name }}
{{- end -}}

{{- /* The ServiceAccount, whose name is part of the SPIFFE ID. */ -}}
{{- define "mtlsd-sidecar.serviceAccount" -}}
{{ if .Values.serviceAccount.name }}{{ .Values.serviceAccount.name }}{{ else }}{{ template "mtlsd-sidecar.name" . }}{{ end }}
{{- end -}}

{{- /* Stops rendering when a required value is missing: executing an
undefined template is an error in every text/template renderer, Helm's too,
and its name is the message. */ -}}
{{- define "mtlsd-sidecar.required" -}}
{{ if not .Values.app.image }}{{ template "ERROR: set app.image" }}{{ end }}
{{- end -}}
