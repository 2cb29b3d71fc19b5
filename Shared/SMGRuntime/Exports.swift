// Services import SMGRuntime and get the configuration types with it; engines that only
// declare keys import the leaf module SMGConfig instead of the whole runtime.
@_exported public import SMGConfig
