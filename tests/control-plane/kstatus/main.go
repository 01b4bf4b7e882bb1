// kstatus reads Kubernetes objects as JSON from stdin (one after another) and prints, for
// each, the status that sigs.k8s.io/cli-utils' kstatus computes — the library behind Flux's
// `wait: true` and the generic health of Argo CD — as one JSON line {"status","message"}.
// The operator's tests feed it the statuses the operator writes.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	decoder := json.NewDecoder(os.Stdin)
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			fmt.Fprintln(os.Stderr, "kstatus: cannot read an object:", err)
			os.Exit(2)
		}
		object := &unstructured.Unstructured{}
		if err := object.UnmarshalJSON(raw); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: not a Kubernetes object:", err)
			os.Exit(2)
		}
		result, err := status.Compute(object)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(2)
		}
		line, _ := json.Marshal(map[string]string{"status": string(result.Status), "message": result.Message})
		fmt.Println(string(line))
	}
}
