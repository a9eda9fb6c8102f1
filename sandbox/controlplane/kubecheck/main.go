// kubecheck validates Kubernetes objects offline against the API types of the Kubernetes
// minor this module pins (go.mod: k8s.io/api, k8s.io/apiextensions-apiserver), the types
// that minor's OpenAPI schema is generated from. It is how the Helm chart's tests check
// rendered objects against the oldest Kubernetes the chart claims (Chart.yaml kubeVersion)
// without a cluster of that version and without downloading anything at run time.
//
// Every YAML document on stdin (or in the files named) must be an object whose apiVersion
// and kind that Kubernetes serves (or a ServiceMonitor, monitoring.coreos.com/v1), and must
// decode strictly into its type: no unknown or duplicated field, every value of its field's
// type. Exit status 0 when all pass; 1 with one line per problem on stderr; 2 on bad usage.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

func newScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientscheme.AddToScheme, apiextensionsv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	return scheme, nil
}

type document struct {
	source string
	index  int
	data   []byte
}

func readDocuments(name string, r io.Reader) ([]document, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var docs []document
	for i := 1; ; i++ {
		data, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(bytes.TrimSpace(stripComments(data))) == 0 {
			continue
		}
		docs = append(docs, document{source: name, index: i, data: data})
	}
}

func stripComments(data []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(data, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

func check(scheme *runtime.Scheme, decoder runtime.Decoder, doc document) error {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc.data, &head); err != nil {
		return fmt.Errorf("not a Kubernetes object: %v", err)
	}
	what := fmt.Sprintf("%s %s %q", head.APIVersion, head.Kind, head.Metadata.Name)
	if head.APIVersion == "" || head.Kind == "" {
		return fmt.Errorf("%s: apiVersion and kind are required", what)
	}
	_, gvk, err := decoder.Decode(doc.data, nil, nil)
	if err != nil {
		if runtime.IsNotRegisteredError(err) {
			return fmt.Errorf("%s: not an API this Kubernetes serves", what)
		}
		return fmt.Errorf("%s: %v", what, err)
	}
	if !scheme.Recognizes(*gvk) {
		return fmt.Errorf("%s: not an API this Kubernetes serves", what)
	}
	return nil
}

// apiVersion is the version of k8s.io/api this program was built with (v0.29.15: Kubernetes
// 1.29.15), as the Go toolchain recorded it.
func apiVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "k8s.io/api" {
				if dep.Replace != nil {
					return dep.Replace.Version
				}
				return dep.Version
			}
		}
	}
	return "unknown"
}

func main() {
	args := os.Args[1:]
	quiet := false
	if len(args) == 1 && args[0] == "-version" {
		fmt.Println(apiVersion())
		return
	}
	if len(args) > 0 && args[0] == "-q" {
		quiet, args = true, args[1:]
	}
	for _, a := range args {
		if strings.HasPrefix(a, "-") && a != "-" {
			fmt.Fprintln(os.Stderr, "usage: kubecheck [-q] [FILE|-]...  (default: stdin), or kubecheck -version")
			os.Exit(2)
		}
	}
	if len(args) == 0 {
		args = []string{"-"}
	}
	scheme, err := newScheme()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	decoder := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var docs []document
	for _, name := range args {
		var r io.Reader = os.Stdin
		if name != "-" {
			f, err := os.Open(name)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			defer f.Close()
			r = f
		} else {
			name = "stdin"
		}
		found, err := readDocuments(name, r)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		docs = append(docs, found...)
	}
	failed := 0
	for _, doc := range docs {
		if err := check(scheme, decoder, doc); err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "%s, document %d: %v\n", doc.source, doc.index, err)
		}
	}
	if !quiet {
		fmt.Printf("%d objects, %d invalid\n", len(docs), failed)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
