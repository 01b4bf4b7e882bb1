# Sourced by the build-*.sh scripts: a Go tool built from the Go module proxy and cached under
# target/tools/, so that each script says only what it builds.
#
#   go_tool_cached SCRIPT DIR PRINT BIN...  exits 0, printing PRINT, when every BIN is in DIR
#   go_tool_start SCRIPT DIR                 checks for Go, makes DIR and a build directory
#                                            $go_tool_tmp (removed on exit); GOTOOLCHAIN=local,
#                                            CGO_ENABLED=0
#   go_tool_install MODULE/CMD VERSION BIN [LDFLAGS]
#                                            `go install` (module mode, outside any go.mod)
#                                            into $go_tool_tmp, then BIN moved into DIR
#   go_tool_module SOURCE WORK NAME MODULE VERSION
#                                            a fresh copy of SOURCE (a main package) in WORK
#                                            with a generated go.mod, module
#                                            routerpolicy.test/controlplane/NAME, requiring
#                                            MODULE@VERSION; the working directory is WORK after

go_tool_cached() {
  local script=$1 dir=$2 print=$3 bin
  shift 3
  for bin in "$@"; do
    [ -x "$dir/$bin" ] || return 0
  done
  echo "$* already built in $dir" >&2
  echo "$print"
  exit 0
}

go_tool_start() {
  local script=$1
  go_tool_dir=$2
  command -v go >/dev/null || { echo "$script: Go is required to build it" >&2; exit 2; }
  mkdir -p "$go_tool_dir"
  go_tool_tmp=$(mktemp -d "$go_tool_dir/.build.XXXXXX")
  trap 'rm -rf "$go_tool_tmp"' EXIT
  export GOTOOLCHAIN=local CGO_ENABLED=0
}

go_tool_install() {
  local package=$1 version=$2 bin=$3 ldflags=${4:--s -w}
  echo "==> $bin ($package@$version)" >&2
  (cd "$go_tool_tmp" && GOBIN="$go_tool_tmp" go install -trimpath -ldflags "$ldflags" "$package@$version" >&2)
  mv "$go_tool_tmp/$bin" "$go_tool_dir/$bin"
}

go_tool_module() {
  local source=$1 work=$2 name=$3 module=$4 version=$5
  rm -rf "$work"
  cp -r "$source" "$work"
  cd "$work"
  cat > go.mod <<GOMOD
module routerpolicy.test/controlplane/$name

go 1.24

require $module $version
GOMOD
}
