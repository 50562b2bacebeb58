package deploy

import (
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// sidecallEnv is the sidecall container's plain env values.
func sidecallEnv(t *testing.T, r rendered) map[string]string {
	t.Helper()
	var ps *corev1.PodSpec
	if d, ok := r.find("Deployment", "sidecall").(*appsv1.Deployment); ok {
		ps = &d.Spec.Template.Spec
	} else if cm, ok := r.find("ConfigMap", "-sidecar-patch").(*corev1.ConfigMap); ok {
		var patch appsv1.Deployment
		if err := yaml.UnmarshalStrict([]byte(cm.Data["patch.yaml"]), &patch); err != nil {
			t.Fatal(err)
		}
		ps = &patch.Spec.Template.Spec
	} else {
		t.Fatal("no sidecall pod rendered")
	}
	env := map[string]string{}
	for _, c := range ps.Containers {
		if c.Name == "sidecall" {
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
		}
	}
	return env
}

// TestHelmOtel: otel.endpoint sets the standard OTEL_* variables in the
// Deployment and in the sidecar patch; without it tracing stays off.
func TestHelmOtel(t *testing.T) {
	sidecar := filepath.Join(chartDir(t), "ci", "istio-sidecar-inbound-values.yaml")
	for _, c := range []struct {
		name, values string
		extra        []string
		want         map[string]string
	}{
		{"default", "", nil, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_PROTOCOL": ""}},
		{"grpc", "", []string{"--set", "otel.endpoint=http://otel:4317"},
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_SAMPLER": ""}},
		{"http sampled", "", []string{"--set", "otel.endpoint=http://otel:4318", "--set", "otel.protocol=http/protobuf",
			"--set", "otel.sampler=parentbased_traceidratio", "--set-string", "otel.samplerArg=0.25"},
			map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}},
		{"sidecar patch", sidecar, []string{"--set", "otel.endpoint=http://otel:4317"},
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := sidecallEnv(t, render(t, c.values, c.extra...))
			for k, want := range c.want {
				if env[k] != want {
					t.Errorf("%s = %q, want %q", k, env[k], want)
				}
			}
		})
	}
}
