package flows

import "gopkg.in/yaml.v3"

// decK's plugin config dedup: _plugin_configs holds named configs, and a
// plugin with _config: NAME gets that config merged under its own, as
// deck does before sending the plugin to Kong: the plugin's own keys win at
// every level, nested mappings are merged key by key.

// loadPluginConfigs keeps the _plugin_configs entries by name.
func loadPluginConfigs(b *Builder, n *yaml.Node) {
	at := Path("_plugin_configs")
	b.mark(at, n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		b.Errorf(at, "must be a mapping of names to plugin configs, got %s", kindName(n))
		return
	}
	b.pluginConfigs = map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		kp := at.Key(k.Value)
		b.mark(kp, k)
		if _, dup := b.pluginConfigs[k.Value]; dup {
			b.errorAt(k.Line, kp, "duplicate key")
			continue
		}
		if v.Kind != yaml.MappingNode {
			b.Errorf(kp, "must be a mapping (a plugin's config), got %s", kindName(v))
			continue
		}
		b.pluginConfigs[k.Value] = v
	}
}

// pluginConfigFrom merges the _plugin_configs entry pc names under pc's
// config; nil when there is none (reported at at._config).
func pluginConfigFrom(b *Builder, pc *PluginConfig, at Path, raw *yaml.Node) *yaml.Node {
	src, ok := b.pluginConfigs[pc.ConfigSource]
	if !ok {
		b.Errorf(at.Key("_config"), "no _plugin_configs entry named %q", pc.ConfigSource)
		return nil
	}
	return mergeConfig(raw, src)
}

// mergeConfig returns dst with src's keys that dst lacks; where both hold
// a mapping, the two are merged the same way. Neither input is changed.
func mergeConfig(dst, src *yaml.Node) *yaml.Node {
	dst, src = deref(dst), deref(src)
	if dst.Kind != yaml.MappingNode || src.Kind != yaml.MappingNode {
		return dst // a bad config: the plugin's own decode reports it
	}
	out := *dst
	out.Content = append([]*yaml.Node(nil), dst.Content...)
	idx := map[string]int{}
	for i := 0; i+1 < len(out.Content); i += 2 {
		idx[out.Content[i].Value] = i + 1
	}
	for i := 0; i+1 < len(src.Content); i += 2 {
		k, v := src.Content[i], src.Content[i+1]
		j, ok := idx[k.Value]
		if !ok {
			out.Content = append(out.Content, k, v)
			continue
		}
		if d := deref(out.Content[j]); d.Kind == yaml.MappingNode && deref(v).Kind == yaml.MappingNode {
			out.Content[j] = mergeConfig(d, v)
		}
	}
	return &out
}

func deref(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}
