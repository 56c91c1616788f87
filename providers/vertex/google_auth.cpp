// SPDX-License-Identifier: Apache-2.0
#include "providers/vertex/google_auth.hpp"
