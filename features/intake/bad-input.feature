@intake
Feature: Bad webhooks are refused clearly and change nothing
  A webhook that is malformed, badly signed, replayed, sent to an unknown
  project or workflow, or too large must get a clear answer saying what is
  wrong, and must leave no trace: no delivery, no run, no event. Nothing about
  a project or workflow is told to a sender who cannot sign for it: an unknown
  one is refused exactly like a wrong signature. A good webhook sent afterwards
  still runs normally, and so does an order just under the size limit.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step | type      | does                             | then |
      | map  | transform | {id: order.id, total: order.sum} | push |
      | push | http_call | POST the mapped order to /orders | done |
      | done | terminate | succeeded                        |      |

  @smoke
  Scenario Outline: A webhook <problem> is refused with <status> and nothing is recorded
    When a webhook <problem> is sent to "order-sync" of "acme"
    Then it is refused with <status> "<code>"
    And nothing was recorded
    And a correct webhook sent afterwards still runs to success

    Examples: Not signed by the workflow's secret, or not for this delivery
      | problem                                      | status | code          |
      | with a forged signature                      | 401    | bad_signature |
      | signed with another workflow's secret        | 401    | bad_signature |
      | signed an hour ago                           | 401    | bad_signature |
      | signed an hour in the future                 | 401    | bad_signature |
      | without a signature                          | 401    | bad_signature |
      | signed the old way, over the body alone      | 401    | bad_signature |
      | whose body was changed after signing         | 401    | bad_signature |
      | signed for another workflow                  | 401    | bad_signature |
      | captured and re-sent under a new delivery id | 401    | bad_signature |
      | for a project that does not exist            | 401    | bad_signature |
      | for a workflow the project does not have     | 401    | bad_signature |

    Examples: Signed, but not something that can be run
      | problem                              | status | code                   |
      | that is not JSON                     | 400    | malformed_body         |
      | without a delivery id                | 400    | missing_delivery_id    |
      | with a delivery id that is not an id | 400    | missing_delivery_id    |
      | of 3 MiB                             | 413    | payload_too_large      |
      | sent as a form instead of JSON       | 415    | unsupported_media_type |

  Scenario: A delivery id reused for a different order is refused and the first run stands
    Given "acme" has a finished run of "order-sync"
    When a different order arrives with the same delivery id
    Then it is refused with 409 "delivery_id_reused"
    And nothing was recorded
    And the order service received the order exactly once

  Scenario: A delivery id reused while its run still waits is refused, and the waiting run is left as it was
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And a run of "order-follow-up" that is waiting in "wait"
    When a different order arrives with the same delivery id
    Then it is refused with 409 "delivery_id_reused"
    And nothing was recorded
    And the run is waiting in "wait"

  Scenario: An order just under the 2 MiB limit is taken and runs
    When "acme" delivers an order webhook of 2 MiB to "order-sync"
    Then the run succeeds
    And the run replays exactly from its log

  Scenario: The refusal never shows the signing secret
    When a webhook with a forged signature is sent to "order-sync" of "acme"
    Then it is refused with 401 "bad_signature"
    And the answer does not contain the signing secret

  Scenario: An invalid workflow definition is refused with every problem named
    When "acme" tries to publish the workflow "broken-sync":
      | step | type      | does                             | then    |
      | map  | transform | {id: order.id, total: order.sum} | nowhere |
      | push | http_call | POST the mapped order to /orders | map     |
    Then publishing is refused because "step \"map\" goes to \"nowhere\", which does not exist"
    And "acme" has no workflow "broken-sync"

  Scenario Outline: A workflow whose first step <flaw> is refused, naming the step
    When "acme" tries to publish the workflow "broken-sync":
      | step | type      | does                             | then   |
      | map  | <type>    | <does>                           | <then> |
      | push | http_call | POST the mapped order to /orders | done   |
      | done | terminate | succeeded                        |        |
    Then publishing is refused because "<reason>"
    And "acme" has no workflow "broken-sync"

    Examples:
      | flaw                                   | type      | does                             | then | reason                                                    |
      | leads back to itself                   | transform | {id: order.id, total: order.sum} | map  | steps form a cycle: map -> map                            |
      | has a type the engine does not know    | email     | send the order to sales          | push | step \"map\" has type \"email\", which is not a step type |
      | holds an expression that does not read | transform | {id: order.id, total: order.sum  | push | step \"map\" expression is not valid JMESPath             |
      | ends the run before the others         | terminate | succeeded                        |      | step \"push\" cannot be reached from \"map\"              |
