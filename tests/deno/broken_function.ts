// TEST FIXTURE: a function that fails while loading, as a bad deploy would. The stack must
// answer 503 BOOT_ERROR for it, like the hosted runtime.
throw new Error("this function fails at import");
