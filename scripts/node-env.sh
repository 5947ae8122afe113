# node-env.sh — sourced (not run) by the project's scripts after setup-node.sh: puts the supported
# Node first on PATH for this shell and points node-gyp at that Node's own headers, so the addon
# builds offline (no header download) and against the Node that will load it.
# Owns: PATH and npm_config_nodedir for the calling shell; nothing else.
__vmpi_node_dir=/opt/vmpi-node/${VMPI_NODE_VERSION:-26.12.1}
if [ -x "$__vmpi_node_dir/bin/node" ]; then
  case ":$PATH:" in
    *":$__vmpi_node_dir/bin:"*) ;;
    *) export PATH="$__vmpi_node_dir/bin:$PATH" ;;
  esac
fi
hash -r
# The headers of the node now on PATH: <prefix>/include/node/node.h beside <prefix>/bin/node.
__vmpi_node_prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
if [ -f "$__vmpi_node_prefix/include/node/node.h" ]; then
  export npm_config_nodedir="$__vmpi_node_prefix"
fi
unset __vmpi_node_dir __vmpi_node_prefix
