// Loads a Node addon with musl's dynamic linker and finds its Node-API entry
// point (scripts/cross-verify.mjs builds it with musl-gcc). No musl Node is
// to be had here; this is as far as a musl process gets without one: every
// library found, every relocation done, the addon's constructors run.
// napi-rs resolves the Node-API functions at run time, so none is needed here.
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
  void *addon = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!addon) { printf("dlopen failed: %s\n", dlerror()); return 1; }
  void *init = dlsym(addon, "napi_register_module_v1");
  printf("loaded under musl; napi_register_module_v1 %s\n", init ? "found" : "missing");
  return init ? 0 : 1;
}
