package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/sidecall/sidecall/processor"
)

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the chart uses;
// strict decoding makes any other field an error.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames,omitempty"`
			Any        bool     `json:"any,omitempty"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// envoyExtensionPolicy is the part of gateway.envoyproxy.io/v1alpha1 EnvoyExtensionPolicy
// sidecall documents.
type envoyExtensionPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		TargetRefs []struct {
			Group       string `json:"group"`
			Kind        string `json:"kind"`
			Name        string `json:"name"`
			SectionName string `json:"sectionName,omitempty"`
		} `json:"targetRefs"`
		ExtProc []struct {
			BackendRefs []struct {
				Group     string `json:"group,omitempty"`
				Kind      string `json:"kind,omitempty"`
				Name      string `json:"name"`
				Namespace string `json:"namespace,omitempty"`
				Port      int32  `json:"port"`
			} `json:"backendRefs"`
			MessageTimeout string `json:"messageTimeout,omitempty"`
			FailOpen       *bool  `json:"failOpen,omitempty"`
			ProcessingMode *struct {
				AllowModeOverride bool         `json:"allowModeOverride,omitempty"`
				Request           *egDirection `json:"request,omitempty"`
				Response          *egDirection `json:"response,omitempty"`
			} `json:"processingMode,omitempty"`
		} `json:"extProc"`
	} `json:"spec"`
}

type egDirection struct {
	Body       string   `json:"body,omitempty"`
	Attributes []string `json:"attributes,omitempty"`
}

// envoyFilterObject is an EnvoyFilter's envelope; the spec is decoded with istio.io/api.
type envoyFilterObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              json.RawMessage `json:"spec"`
}

// object is one decoded manifest.
type object struct {
	Kind, Name string
	Obj        any
	Filter     *networking.EnvoyFilter // EnvoyFilter spec, when Kind is EnvoyFilter
}

// decodeObject decodes one manifest strictly into its typed Go struct: unknown fields and
// wrong types fail, as kubeconform would with the real schemas.
func decodeObject(doc []byte) (object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return object{}, err
	}
	var obj any
	switch tm.APIVersion + "/" + tm.Kind {
	case "v1/ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1/Service":
		obj = &corev1.Service{}
	case "v1/ServiceAccount":
		obj = &corev1.ServiceAccount{}
	case "v1/Secret":
		obj = &corev1.Secret{}
	case "apps/v1/Deployment":
		obj = &appsv1.Deployment{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		obj = &autoscalingv2.HorizontalPodAutoscaler{}
	case "policy/v1/PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1/NetworkPolicy":
		obj = &networkingv1.NetworkPolicy{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		obj = &serviceMonitor{}
	case "gateway.envoyproxy.io/v1alpha1/EnvoyExtensionPolicy":
		obj = &envoyExtensionPolicy{}
	case "networking.istio.io/v1alpha3/EnvoyFilter":
		obj = &envoyFilterObject{}
	default:
		return object{}, fmt.Errorf("unexpected object %s %s", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	o := object{Kind: tm.Kind, Obj: obj}
	if m, ok := obj.(metav1.ObjectMetaAccessor); ok {
		o.Name = m.GetObjectMeta().GetName()
	}
	if o.Name == "" {
		return object{}, fmt.Errorf("%s without metadata.name", tm.Kind)
	}
	if ef, ok := obj.(*envoyFilterObject); ok {
		spec, err := decodeEnvoyFilter(ef.Spec)
		if err != nil {
			return object{}, err
		}
		if err := validateEnvoyFilter(spec, "EnvoyFilter "+o.Name); err != nil {
			return object{}, err
		}
		o.Filter = spec
	}
	if p, ok := obj.(*envoyExtensionPolicy); ok {
		if err := checkExtensionPolicy(p); err != nil {
			return object{}, err
		}
	}
	return o, nil
}

// checkExtensionPolicy checks what Envoy Gateway would otherwise silently accept.
func checkExtensionPolicy(p *envoyExtensionPolicy) error {
	if len(p.Spec.TargetRefs) == 0 {
		return fmt.Errorf("EnvoyExtensionPolicy %s: no targetRefs", p.Name)
	}
	if len(p.Spec.ExtProc) == 0 {
		return fmt.Errorf("EnvoyExtensionPolicy %s: no extProc", p.Name)
	}
	for i, e := range p.Spec.ExtProc {
		at := fmt.Sprintf("EnvoyExtensionPolicy %s: extProc[%d]", p.Name, i)
		if e.ProcessingMode == nil || e.ProcessingMode.Request == nil {
			return fmt.Errorf("%s: processingMode.request must be set: without it Envoy Gateway sends nothing", at)
		}
		if !e.ProcessingMode.AllowModeOverride {
			return fmt.Errorf("%s: processingMode.allowModeOverride must be true", at)
		}
		if len(e.BackendRefs) == 0 || e.BackendRefs[0].Port == 0 {
			return fmt.Errorf("%s: backendRefs with a port required", at)
		}
		if e.MessageTimeout != "" {
			d, err := time.ParseDuration(e.MessageTimeout)
			if err != nil {
				return fmt.Errorf("%s: messageTimeout: %w", at, err)
			}
			// Envoy Gateway sets no max_message_timeout, so Envoy ignores sidecall's
			// override_message_timeout: messageTimeout itself must cover slow callouts.
			if d < processor.DefaultEnvoyMaxMessageTimeout {
				return fmt.Errorf("%s: messageTimeout %v: must be at least %v (--envoy-max-message-timeout's default): "+
					"Envoy Gateway sets no max_message_timeout, so sidecall cannot extend it", at, d, processor.DefaultEnvoyMaxMessageTimeout)
			}
		}
	}
	return nil
}

// decodeStream decodes every document of a manifest stream.
func decodeStream(docs [][]byte) ([]object, error) {
	var objs []object
	for i, d := range docs {
		o, err := decodeObject(d)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w\n%s", i, err, firstLines(d, 8))
		}
		objs = append(objs, o)
	}
	return objs, nil
}

func firstLines(b []byte, n int) string {
	lines := bytes.SplitN(b, []byte("\n"), n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
