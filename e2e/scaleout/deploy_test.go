package scaleout_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The files under deploy/ that cannot run here (Docker, Kubernetes and
// systemd need a daemon this machine does not have) are at least parsed,
// and checked against each other and against what TestScaleOut proves
// with nginx and real proxies.

func deployFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// drainBudget is the longest a proxy with the default --drain and
// --timeout takes to stop after SIGTERM (cmd/proxy serves for --drain, then
// gives in-flight requests --timeout plus 5 s).
const drainBudget = 40 * time.Second

// composeFile is the part of a compose file the tests read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image           string            `yaml:"image"`
	Build           any               `yaml:"build"`
	Command         []string          `yaml:"command"`
	Environment     map[string]string `yaml:"environment"`
	Volumes         []string          `yaml:"volumes"`
	Ports           []string          `yaml:"ports"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
	DependsOn       dependsOn         `yaml:"depends_on"`
	Networks        map[string]struct {
		IPv4 string `yaml:"ipv4_address"`
	} `yaml:"networks"`
}

// dependsOn is a service's depends_on, in either of its forms: a list of
// names, or conditions by name.
type dependsOn map[string]struct {
	Condition string `yaml:"condition"`
}

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		var names []string
		if err := n.Decode(&names); err != nil {
			return err
		}
		*d = dependsOn{}
		for _, name := range names {
			(*d)[name] = struct {
				Condition string `yaml:"condition"`
			}{"service_started"}
		}
		return nil
	}
	return n.Decode((*map[string]struct {
		Condition string `yaml:"condition"`
	})(d))
}

// checkCompose checks what every compose file must get right: nginx in
// front, its upstreams exactly the compose proxies, each proxy listening
// where nginx sends, trusting only nginx, and stopping within its grace
// period. checkBus checks each proxy's KEYHOLE_BUS.
func checkCompose(t *testing.T, compose composeFile, checkBus func(proxy, bus string)) {
	t.Helper()
	nginx, ok := compose.Services["nginx"]
	if !ok {
		t.Fatal("no nginx service")
	}
	if !slicesContains(nginx.Volumes, "./nginx/keyhole.conf:/etc/nginx/nginx.conf:ro") {
		t.Errorf("nginx does not mount keyhole.conf as nginx.conf: %v", nginx.Volumes)
	}
	nginxIP := nginx.Networks["keyhole"].IPv4
	// keyhole.conf's upstream servers are exactly the compose proxies.
	conf := string(deployFile(t, "nginx/keyhole.conf"))
	upstreams := regexp.MustCompile(`(?m)^\s*server\s+([a-z0-9]+):(\d+)\b`).FindAllStringSubmatch(conf, -1)
	if len(upstreams) < 2 {
		t.Fatalf("keyhole.conf names %d upstream servers, want 2 or more", len(upstreams))
	}
	for _, u := range upstreams {
		name, port := u[1], u[2]
		p, ok := compose.Services[name]
		if !ok {
			t.Errorf("keyhole.conf upstream %s:%s is not a compose service", name, port)
			continue
		}
		if p.Build == nil || p.Image == "" {
			t.Errorf("%s: want both build (deploy/Dockerfile) and an image name", name)
		}
		env := p.Environment
		checkBus(name, env["KEYHOLE_BUS"])
		if env["KEYHOLE_LISTEN"] != ":"+port {
			t.Errorf("%s: KEYHOLE_LISTEN %q, but nginx sends to port %s", name, env["KEYHOLE_LISTEN"], port)
		}
		if env["KEYHOLE_ADMIN"] == "" {
			t.Errorf("%s: no admin listener", name)
		}
		if env["KEYHOLE_TRUSTED_PROXIES"] != nginxIP || nginxIP == "" {
			t.Errorf("%s: KEYHOLE_TRUSTED_PROXIES %q, want nginx's address %q", name, env["KEYHOLE_TRUSTED_PROXIES"], nginxIP)
		}
		if d, err := time.ParseDuration(p.StopGracePeriod); err != nil || d <= drainBudget {
			t.Errorf("%s: stop_grace_period %q, want more than %v", name, p.StopGracePeriod, drainBudget)
		}
	}
}

func readCompose(t *testing.T, name string) composeFile {
	t.Helper()
	var compose composeFile
	if err := yaml.Unmarshal(deployFile(t, name), &compose); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return compose
}

func TestDockerCompose(t *testing.T) {
	compose := readCompose(t, "docker-compose.yml")
	checkCompose(t, compose, func(proxy, bus string) {
		if !strings.HasPrefix(bus, "redis://redis:6379/") {
			t.Errorf("%s: KEYHOLE_BUS %q, want the redis service", proxy, bus)
		}
	})
	if _, ok := compose.Services["redis"]; !ok {
		t.Error("no redis service")
	}
}

// TestDockerComposeCluster: the cluster compose file's proxies name only
// its cluster nodes, which run in cluster mode at distinct fixed
// addresses, and are joined (three masters, one replica each) before any
// proxy starts.
func TestDockerComposeCluster(t *testing.T) {
	compose := readCompose(t, "docker-compose.cluster.yml")
	checkCompose(t, compose, func(proxy, bus string) {
		u, err := url.Parse(bus)
		if err != nil || u.Scheme != "redis+cluster" {
			t.Errorf("%s: KEYHOLE_BUS %q, want a redis+cluster:// URL", proxy, bus)
			return
		}
		for _, hp := range strings.Split(u.Host, ",") {
			host, _, _ := strings.Cut(hp, ":")
			if n, ok := compose.Services[host]; !ok || !slicesContains(n.Command, "--cluster-enabled") {
				t.Errorf("%s: KEYHOLE_BUS names %q, not a cluster-enabled service", proxy, hp)
			}
		}
		if p := compose.Services[proxy]; p.DependsOn["redis-cluster-init"].Condition != "service_completed_successfully" {
			t.Errorf("%s: does not wait for the cluster to be formed: %v", proxy, p.DependsOn)
		}
	})
	init, ok := compose.Services["redis-cluster-init"]
	if !ok {
		t.Fatal("no redis-cluster-init service")
	}
	script := strings.Join(init.Command, "\n")
	if !strings.Contains(script, "--cluster-replicas 1") {
		t.Errorf("redis-cluster-init does not give each master a replica: %q", script)
	}
	ips := map[string]string{}
	nodes := 0
	for name, s := range compose.Services {
		if !slicesContains(s.Command, "--cluster-enabled") {
			continue
		}
		nodes++
		if init.DependsOn[name].Condition != "service_healthy" {
			t.Errorf("redis-cluster-init does not wait for %s to be healthy", name)
		}
		ip := s.Networks["keyhole"].IPv4
		if ip == "" || ips[ip] != "" {
			t.Errorf("%s: address %q missing or shared with %s", name, ip, ips[ip])
		}
		ips[ip] = name
		if !strings.Contains(script, ip+":6379") {
			t.Errorf("redis-cluster-init does not join %s (%s)", name, ip)
		}
	}
	if nodes != 6 {
		t.Errorf("%d cluster nodes, want 6 (three masters, three replicas)", nodes)
	}
}

func TestDockerfileGoVersion(t *testing.T) {
	mod, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	if want := "FROM golang:" + string(m[1]) + " "; !bytes.Contains(deployFile(t, "Dockerfile"), []byte(want)) {
		t.Errorf("deploy/Dockerfile does not build with %q (go.mod says go %s)", want, m[1])
	}
}

// k8sObject is the part of a manifest the test reads.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Ports    []struct {
			Port int `yaml:"port"`
		} `yaml:"ports"`
		Template struct {
			Spec struct {
				Grace      int `yaml:"terminationGracePeriodSeconds"`
				Containers []struct {
					Env []struct {
						Name  string `yaml:"name"`
						Value string `yaml:"value"`
					} `yaml:"env"`
					Ports []struct {
						Name string `yaml:"name"`
						Port int    `yaml:"containerPort"`
					} `yaml:"ports"`
					Readiness *k8sProbe `yaml:"readinessProbe"`
					Liveness  *k8sProbe `yaml:"livenessProbe"`
					Lifecycle struct {
						PreStop struct {
							Sleep struct {
								Seconds int `yaml:"seconds"`
							} `yaml:"sleep"`
						} `yaml:"preStop"`
					} `yaml:"lifecycle"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

func TestKubernetesManifest(t *testing.T) {
	dec := yaml.NewDecoder(bytes.NewReader(deployFile(t, "k8s/proxy.yaml")))
	objs := map[string]k8sObject{}
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("k8s/proxy.yaml: %v", err)
		}
		if o.Kind == "" {
			continue
		}
		objs[o.Kind+"/"+o.Metadata.Name] = o
	}
	d, ok := objs["Deployment/keyhole-proxy"]
	if !ok {
		t.Fatalf("no Deployment keyhole-proxy among %d objects", len(objs))
	}
	if _, ok := objs["Service/keyhole"]; !ok {
		t.Error("no Service for the proxies")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas %v, want 2 or more", d.Spec.Replicas)
	}
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	ports := map[string]bool{}
	for _, p := range c.Ports {
		ports[p.Name] = true
	}
	for name, probe := range map[string]*k8sProbe{"/readyz": c.Readiness, "/healthz": c.Liveness} {
		if probe == nil || probe.HTTPGet.Path != name || probe.HTTPGet.Port != "admin" || !ports["admin"] {
			t.Errorf("probe for %s: %+v; want httpGet %s on the admin port", name, probe, name)
		}
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["KEYHOLE_ADMIN"] == "" {
		t.Error("no KEYHOLE_ADMIN")
	}
	timeout, err := time.ParseDuration(env["KEYHOLE_TIMEOUT"])
	if err != nil {
		t.Errorf("KEYHOLE_TIMEOUT %q: %v", env["KEYHOLE_TIMEOUT"], err)
	}
	drain, err := time.ParseDuration(env["KEYHOLE_DRAIN"])
	if err != nil || drain <= 0 {
		t.Errorf("KEYHOLE_DRAIN %q: want the drain period set, %v", env["KEYHOLE_DRAIN"], err)
	}
	need := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds)*time.Second + drain + timeout + 5*time.Second
	if grace := time.Duration(spec.Grace) * time.Second; grace <= need {
		t.Errorf("terminationGracePeriodSeconds %v, want more than preStop + drain + timeout + 5s = %v", grace, need)
	}
	// The readiness probe must turn the pod out of the Service before the
	// drain ends, or the ingress still sends to it when it stops listening.
	if r := c.Readiness; r != nil {
		out := time.Duration(r.PeriodSeconds*max(r.FailureThreshold, 1)) * time.Second
		if out >= drain {
			t.Errorf("readiness probe takes %v to turn the pod out, not less than KEYHOLE_DRAIN %v", out, drain)
		}
	}
	// KEYHOLE_BUS names a Redis Service of this manifest.
	m := regexp.MustCompile(`^redis://([a-z0-9-]+):(\d+)/\d+$`).FindStringSubmatch(env["KEYHOLE_BUS"])
	if m == nil {
		t.Fatalf("KEYHOLE_BUS %q, want redis://SERVICE:PORT/DB", env["KEYHOLE_BUS"])
	}
	svc, ok := objs["Service/"+m[1]]
	if !ok || len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].Port != 6379 || m[2] != "6379" {
		t.Errorf("KEYHOLE_BUS %q does not name a Redis Service of the manifest", env["KEYHOLE_BUS"])
	}
}

func TestSystemdUnits(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"systemd/keyhole-proxy.service", []string{
			"ExecStart=/usr/local/bin/keyhole-proxy", "EnvironmentFile=/etc/keyhole/proxy.env", "KillSignal=SIGTERM",
		}},
		{"systemd/keyhole-client@.service", []string{
			"ExecStart=/usr/local/bin/keyhole-client ${TARGET}", "EnvironmentFile=/etc/keyhole/client-%i.env",
		}},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			service := unitSection(t, deployFile(t, tc.file), "Service")
			for _, w := range append(tc.want, "DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict",
				"ProtectHome=yes", "PrivateTmp=yes", "Restart=on-failure") {
				if !slicesContains(service, w) {
					t.Errorf("[Service] lacks %s", w)
				}
			}
			if strings.Contains(tc.file, "proxy") {
				for _, l := range service {
					if v, ok := strings.CutPrefix(l, "TimeoutStopSec="); ok {
						if d, err := time.ParseDuration(v); err != nil || d <= drainBudget {
							t.Errorf("TimeoutStopSec=%s, want more than %v", v, drainBudget)
						}
					}
				}
			}
		})
	}
}

// unitSection returns the key=value lines of one section of a unit file.
func unitSection(t *testing.T, b []byte, name string) []string {
	t.Helper()
	var out []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "["):
			in = l == "["+name+"]"
		case in:
			if !strings.Contains(l, "=") {
				t.Errorf("not key=value: %q", l)
			}
			out = append(out, l)
		}
	}
	if out == nil {
		t.Fatalf("no [%s] section", name)
	}
	return out
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
