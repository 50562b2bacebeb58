package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	yaml3 "gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

func TestHelmLint(t *testing.T) {
	helm := helmBin(t)
	for _, vf := range valuesFiles(t) {
		t.Run(filepath.Base(vf), func(t *testing.T) {
			cmd := exec.Command(helm, "lint", "--strict", chartDir(t), "-f", vf)
			cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir())
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
		})
	}
}

// rendered is one values file's decoded output.
type rendered struct {
	objs []object
}

func (r rendered) kinds() map[string]int {
	k := map[string]int{}
	for _, o := range r.objs {
		k[o.Kind]++
	}
	return k
}

func (r rendered) find(kind, nameSuffix string) any {
	for _, o := range r.objs {
		if o.Kind == kind && strings.HasSuffix(o.Name, nameSuffix) {
			return o.Obj
		}
	}
	return nil
}

func render(t *testing.T, values string, extra ...string) rendered {
	t.Helper()
	out, err := helmTemplate(t, values, extra...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	objs, err := decodeStream(splitDocs(t, out))
	if err != nil {
		t.Fatal(err)
	}
	return rendered{objs: objs}
}

// TestHelmTemplate renders every values file, decodes every object strictly and checks what
// each mode must produce.
func TestHelmTemplate(t *testing.T) {
	want := map[string]map[string]int{
		"standalone-minimal-values.yaml":    {"ConfigMap": 1, "Deployment": 1, "Service": 1, "ServiceAccount": 1, "PodDisruptionBudget": 1},
		"standalone-full-values.yaml":       {"ConfigMap": 1, "Deployment": 1, "Service": 2, "ServiceAccount": 1, "PodDisruptionBudget": 1, "HorizontalPodAutoscaler": 1, "ServiceMonitor": 1, "EnvoyExtensionPolicy": 1, "NetworkPolicy": 1},
		"istio-sidecar-inbound-values.yaml": {"ConfigMap": 2, "EnvoyFilter": 1},
		"istio-gateway-values.yaml":         {"ConfigMap": 1, "Deployment": 1, "Service": 2, "ServiceAccount": 1, "PodDisruptionBudget": 1, "HorizontalPodAutoscaler": 1, "ServiceMonitor": 1, "EnvoyFilter": 1},
	}
	for _, vf := range valuesFiles(t) {
		name := filepath.Base(vf)
		t.Run(name, func(t *testing.T) {
			r := render(t, vf)
			w, ok := want[name]
			if !ok {
				t.Fatalf("no expectations for %s: add them to TestHelmTemplate", name)
			}
			if got := r.kinds(); !mapsEqual(got, w) {
				t.Errorf("kinds: got %v, want %v", got, w)
			}
			if d, ok := r.find("Deployment", "sidecall").(*appsv1.Deployment); ok {
				for _, e := range checkPodSpec(&d.Spec.Template.Spec, "0.0.0.0:9000") {
					t.Error(e)
				}
				checkService(t, r)
			}
			if cm, ok := r.find("ConfigMap", "-sidecar-patch").(*corev1.ConfigMap); ok {
				// The patch users apply to their app: decoded strictly as a Deployment.
				var patch appsv1.Deployment
				if err := yaml.UnmarshalStrict([]byte(cm.Data["patch.yaml"]), &patch); err != nil {
					t.Fatalf("sidecar patch: %v", err)
				}
				for _, e := range checkPodSpec(&patch.Spec.Template.Spec, "127.0.0.1:9000") {
					t.Error(e)
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// checkPodSpec checks the sidecall container: hardening, probes, ports, mounts, listen address.
func checkPodSpec(ps *corev1.PodSpec, grpcListen string) []string {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	var c *corev1.Container
	for i := range ps.Containers {
		if ps.Containers[i].Name == "sidecall" {
			c = &ps.Containers[i]
		}
	}
	if c == nil {
		return []string{"no sidecall container"}
	}
	sc := c.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		bad("container securityContext not hardened: %+v", sc)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		bad("liveness probe must GET /healthz: %+v", c.LivenessProbe)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		bad("readiness probe must GET /readyz: %+v", c.ReadinessProbe)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != 9000 || ports["admin"] != 9901 {
		bad("ports: got %v, want grpc 9000 and admin 9901", ports)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["SIDECALL_GRPC_LISTEN"] != grpcListen {
		bad("SIDECALL_GRPC_LISTEN: got %q, want %q", env["SIDECALL_GRPC_LISTEN"], grpcListen)
	}
	if env["SIDECALL_ADMIN_LISTEN"] != "0.0.0.0:9901" {
		bad("SIDECALL_ADMIN_LISTEN: got %q: the kubelet's probes need the pod IP", env["SIDECALL_ADMIN_LISTEN"])
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		bad("resources: want cpu requests and a memory limit, got %+v", c.Resources)
	}
	vols := map[string]bool{}
	for _, v := range ps.Volumes {
		vols[v.Name] = true
	}
	for _, m := range c.VolumeMounts {
		if !vols[m.Name] {
			bad("volumeMount %q has no volume", m.Name)
		}
		if m.Name == "sidecall-config" && m.SubPath != "" {
			bad("config mounted with subPath: the kubelet never updates subPath mounts, hot reload would not work")
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && (e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "") {
			bad("env %s: secretKeyRef needs name and key", e.Name)
		}
	}
	return errs
}

func checkService(t *testing.T, r rendered) {
	t.Helper()
	s, ok := r.find("Service", "sidecall").(*corev1.Service)
	if !ok {
		t.Fatal("no Service")
	}
	for _, p := range s.Spec.Ports {
		// Istio picks the protocol from the port name or appProtocol: ext_proc needs HTTP/2.
		if p.Port == 9000 && (p.Name != "grpc" || p.AppProtocol == nil || *p.AppProtocol != "grpc") {
			t.Errorf("gRPC port must be named grpc with appProtocol grpc: %+v", p)
		}
		// The admin port (/config, /metrics) is never published on the main Service.
		if p.Port == 9901 || p.TargetPort.String() == "admin" || p.TargetPort.IntValue() == 9901 || strings.Contains(p.Name, "admin") {
			t.Errorf("the Service publishes the admin port: %+v", p)
		}
	}
	if len(s.Spec.Ports) != 1 {
		t.Errorf("want 1 Service port (grpc), got %d", len(s.Spec.Ports))
	}
}

// TestHelmConfigChecksum: a config change changes the pod template (rolls the pods) unless
// config.rollOnChange is false (hot reload).
func TestHelmConfigChecksum(t *testing.T) {
	podAnn := func(extra ...string) map[string]string {
		r := render(t, "", extra...)
		d := r.find("Deployment", "sidecall").(*appsv1.Deployment)
		return d.Spec.Template.Annotations
	}
	a := podAnn()["checksum/config"]
	b := podAnn("--set", "config.content=_format_version: \"3.0\"")["checksum/config"]
	if a == "" || b == "" || a == b {
		t.Errorf("checksum/config must exist and change with the config: %q vs %q", a, b)
	}
	if c, ok := podAnn("--set", "config.rollOnChange=false")["checksum/config"]; ok {
		t.Errorf("rollOnChange=false must drop checksum/config, got %q", c)
	}
	if c, ok := podAnn("--set", "config.existingConfigMap=mine")["checksum/config"]; ok {
		t.Errorf("existingConfigMap: the chart cannot checksum a ConfigMap it does not render, got %q", c)
	}
}

// TestHelmBadValues: values that must be refused, either by the chart (fail) or by strict
// decoding of what it renders. Shows the checks above can fail.
func TestHelmBadValues(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "testdata", "bad-values", "*.yaml"))
	if err != nil || len(files) < 4 {
		t.Fatalf("want bad values files in testdata/bad-values, got %d (%v)", len(files), err)
	}
	for _, vf := range files {
		t.Run(filepath.Base(vf), func(t *testing.T) {
			want := expectedError(t, vf)
			out, err := helmTemplate(t, vf)
			if err == nil {
				_, err = decodeStream(splitDocs(t, out))
			}
			if err == nil {
				t.Fatal("rendered and decoded cleanly; want an error")
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not contain %q", err, want)
			}
		})
	}
}

// expectedError reads the "# want: ..." line of a bad values file.
func expectedError(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if s, ok := strings.CutPrefix(l, "# want: "); ok {
			return s
		}
	}
	t.Fatalf("%s has no '# want: ' line", file)
	return ""
}

// RenderedConfigs renders every CI values file and returns the sidecall config each puts in
// its ConfigMap, keyed by values file name. The lead's `sidecall validate` test can feed
// these to the validator.
func RenderedConfigs(t testing.TB) map[string][]byte {
	t.Helper()
	res := map[string][]byte{}
	for _, vf := range valuesFiles(t) {
		out, err := helmTemplate(t, vf)
		if err != nil {
			t.Fatalf("%s: helm template: %v", filepath.Base(vf), err)
		}
		for _, d := range splitDocs(t, out) {
			var cm corev1.ConfigMap
			if err := yaml.Unmarshal(d, &cm); err != nil || cm.Kind != "ConfigMap" || strings.HasSuffix(cm.Name, "-sidecar-patch") {
				continue
			}
			for _, v := range cm.Data {
				res[filepath.Base(vf)] = []byte(v)
			}
		}
	}
	return res
}

// renderedEnv returns the env var names the sidecall container gets in a values file's
// output, and whether it also gets envFrom (names unknown here).
func renderedPod(t *testing.T, vf string) (*corev1.PodSpec, bool) {
	t.Helper()
	r := render(t, vf)
	if d, ok := r.find("Deployment", "sidecall").(*appsv1.Deployment); ok {
		return &d.Spec.Template.Spec, true
	}
	if cm, ok := r.find("ConfigMap", "-sidecar-patch").(*corev1.ConfigMap); ok {
		var patch appsv1.Deployment
		if err := yaml.UnmarshalStrict([]byte(cm.Data["patch.yaml"]), &patch); err != nil {
			t.Fatal(err)
		}
		return &patch.Spec.Template.Spec, true
	}
	return nil, false
}

// TestHelmDefaultConfigIsShipped: the chart's default config is the one the image ships.
func TestHelmDefaultConfigIsShipped(t *testing.T) {
	var v struct {
		Config struct {
			Content string `yaml:"content"`
		} `yaml:"config"`
	}
	b, err := os.ReadFile(filepath.Join(chartDir(t), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml3Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "config", "kong.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(v.Config.Content) != strings.TrimSpace(string(img)) {
		t.Errorf("values.yaml config.content differs from deploy/config/kong.yml (the image's default)")
	}
}

func yaml3Unmarshal(b []byte, v any) error { return yaml3.Unmarshal(b, v) }

// TestHelmPodChecksCatchWeakening: the pod checks fail when the chart is told to weaken
// the container (so TestHelmTemplate's checks are not vacuous).
func TestHelmPodChecksCatchWeakening(t *testing.T) {
	cases := map[string][]string{
		"writable root fs":     {"--set", "securityContext.readOnlyRootFilesystem=false"},
		"privilege escalation": {"--set", "securityContext.allowPrivilegeEscalation=true"},
		"liveness elsewhere":   {"--set", "livenessProbe.httpGet.path=/metrics"},
		"no resources":         {"--set", "resources=null"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			r := render(t, "", args...)
			d := r.find("Deployment", "sidecall").(*appsv1.Deployment)
			if errs := checkPodSpec(&d.Spec.Template.Spec, "0.0.0.0:9000"); len(errs) == 0 {
				t.Fatal("pod checks passed a weakened container")
			}
		})
	}
}

// sidecallArgs returns the sidecall container's args in a Deployment or the sidecar patch.
func sidecallArgs(t *testing.T, ps *corev1.PodSpec) []string {
	t.Helper()
	for _, c := range ps.Containers {
		if c.Name == "sidecall" {
			return c.Args
		}
	}
	t.Fatal("no sidecall container")
	return nil
}

// TestHelmAdminConfigOffByDefault: the chart runs sidecall with --admin-config=false unless
// adminConfig is true, in its Deployment and in the sidecar patch; the probes still use the
// admin port.
func TestHelmAdminConfigOffByDefault(t *testing.T) {
	for _, c := range []struct {
		name, values string
		extra        []string
		want         string
	}{
		{"default", "", nil, "--admin-config=false"},
		{"adminConfig true", "", []string{"--set", "adminConfig=true"}, "--admin-config=true"},
		{"sidecar patch", filepath.Join(chartDir(t), "ci", "istio-sidecar-inbound-values.yaml"), nil, "--admin-config=false"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := render(t, c.values, c.extra...)
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
			args := sidecallArgs(t, ps)
			n := 0
			for _, a := range args {
				if strings.HasPrefix(a, "--admin-config") {
					n++
				}
			}
			if !slices.Contains(args, c.want) || n != 1 {
				t.Errorf("args %v: want exactly one %s", args, c.want)
			}
			for _, c := range ps.Containers {
				if c.Name != "sidecall" {
					continue
				}
				if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.ReadinessProbe.HTTPGet.Port.String() != "admin" {
					t.Errorf("readiness probe: %+v", c.ReadinessProbe)
				}
				if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Port.String() != "admin" {
					t.Errorf("liveness probe: %+v", c.LivenessProbe)
				}
			}
		})
	}
}

// TestHelmMetricsWithoutPublishingAdmin: the ServiceMonitor scrapes /metrics through a
// headless -metrics Service (rendered only with it), never through the main Service.
func TestHelmMetricsWithoutPublishingAdmin(t *testing.T) {
	if r := render(t, ""); r.find("Service", "-metrics") != nil || r.find("ServiceMonitor", "sidecall") != nil {
		t.Error("the metrics Service and ServiceMonitor must be off by default")
	}
	r := render(t, "", "--set", "serviceMonitor.enabled=true")
	checkService(t, r)
	ms, ok := r.find("Service", "-metrics").(*corev1.Service)
	if !ok {
		t.Fatal("no -metrics Service with serviceMonitor.enabled")
	}
	if ms.Spec.ClusterIP != corev1.ClusterIPNone || len(ms.Spec.Ports) != 1 || ms.Spec.Ports[0].TargetPort.String() != "admin" {
		t.Errorf("metrics Service: want headless with one port to admin, got %+v", ms.Spec)
	}
	sm := r.find("ServiceMonitor", "sidecall").(*serviceMonitor)
	main := r.find("Service", "sidecall").(*corev1.Service)
	matches := func(labels map[string]string) bool {
		for k, v := range sm.Spec.Selector.MatchLabels {
			if labels[k] != v {
				return false
			}
		}
		return true
	}
	if !matches(ms.Labels) || matches(main.Labels) {
		t.Errorf("ServiceMonitor selector %v must pick the -metrics Service only", sm.Spec.Selector.MatchLabels)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != ms.Spec.Ports[0].Name || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v: want the -metrics Service's port, /metrics", sm.Spec.Endpoints)
	}
}

// TestHelmNetworkPolicy: off by default; when enabled it decodes into networking/v1, selects
// the sidecall pods, and admits the gRPC port from the Envoy selector and the admin port from
// the monitoring namespace only. Not rendered for a sidecar (the pods are the app's).
func TestHelmNetworkPolicy(t *testing.T) {
	if r := render(t, ""); r.find("NetworkPolicy", "sidecall") != nil {
		t.Error("NetworkPolicy rendered by default")
	}
	r := render(t, "", "--set", "networkPolicy.enabled=true", "--set", "networkPolicy.envoy.podSelector.matchLabels.app=envoy")
	np, ok := r.find("NetworkPolicy", "sidecall").(*networkingv1.NetworkPolicy)
	if !ok {
		t.Fatal("no NetworkPolicy with networkPolicy.enabled")
	}
	if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "sidecall" || np.Spec.PodSelector.MatchLabels["app.kubernetes.io/instance"] != "sc" {
		t.Errorf("podSelector %v: want the sidecall pods", np.Spec.PodSelector)
	}
	if len(np.Spec.PolicyTypes) != 1 || np.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress {
		t.Errorf("policyTypes %v, want [Ingress]", np.Spec.PolicyTypes)
	}
	allowed := map[int32]networkingv1.NetworkPolicyPeer{}
	for _, rule := range np.Spec.Ingress {
		if len(rule.From) != 1 || len(rule.Ports) != 1 || rule.Ports[0].Port == nil {
			t.Fatalf("ingress rule %+v: want one peer and one port (an empty list would admit everyone)", rule)
		}
		allowed[rule.Ports[0].Port.IntVal] = rule.From[0]
	}
	if len(allowed) != 2 {
		t.Fatalf("ingress ports %v: want the gRPC and admin ports only", allowed)
	}
	if p := allowed[9000]; p.PodSelector == nil || p.PodSelector.MatchLabels["app"] != "envoy" || p.NamespaceSelector != nil {
		t.Errorf("gRPC port from %+v: want the Envoy pods of the release namespace", p)
	}
	if p := allowed[9901]; p.NamespaceSelector == nil || p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
		t.Errorf("admin port from %+v: want the monitoring namespace", p)
	}
	sidecar := render(t, filepath.Join(chartDir(t), "ci", "istio-sidecar-inbound-values.yaml"),
		"--set", "networkPolicy.enabled=true", "--set", "networkPolicy.envoy.podSelector.matchLabels.app=envoy")
	if sidecar.find("NetworkPolicy", "sidecall") != nil {
		t.Error("NetworkPolicy rendered for a sidecar: the chart does not own the app's pods")
	}
}

// TestHelmSidecallKnowsEnvoysClock: the chart tells sidecall the message_timeout and
// max_message_timeout its Envoy config sets (Istio), or Envoy Gateway's single timeout for
// both (it has no max_message_timeout), so sidecall asks for more time exactly when Envoy
// would otherwise answer first.
func TestHelmSidecallKnowsEnvoysClock(t *testing.T) {
	for _, c := range []struct {
		name     string
		extra    []string
		msg, max string
	}{
		{"istio values", []string{"--set", "istio.messageTimeout=3s", "--set", "istio.maxMessageTimeout=20s"}, "3s", "20s"},
		{"envoy gateway", []string{"--set", "envoyGateway.enabled=true", "--set", "envoyGateway.messageTimeout=15s"}, "15s", "15s"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := render(t, "", c.extra...)
			d, ok := r.find("Deployment", "sidecall").(*appsv1.Deployment)
			if !ok {
				t.Fatal("no Deployment rendered")
			}
			args := sidecallArgs(t, &d.Spec.Template.Spec)
			if !slices.Contains(args, "--envoy-message-timeout="+c.msg) || !slices.Contains(args, "--envoy-max-message-timeout="+c.max) {
				t.Errorf("args %v: want --envoy-message-timeout=%s and --envoy-max-message-timeout=%s", args, c.msg, c.max)
			}
		})
	}
}
