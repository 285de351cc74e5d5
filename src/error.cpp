#include "difftrain/error.h"
