@tenancy
Feature: Another project's operator cannot touch a run in the middle of its retries
  A run between two attempts of its call is the run an operator is most
  tempted to touch. Only its own project may: for any other project the run
  does not exist, and the knock leaves it exactly as it was, its backoff still
  running.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step | type      | does                                                                     | then |
      | map  | transform | {id: order.id, total: order.sum}                                         | push |
      | push | http_call | POST the mapped order to /orders, up to 3 attempts, backing off 1 minute | done |
      | done | terminate | succeeded                                                                |      |
    And the project "globex" with the workflow "order-sync":
      | step | type      | does                                                                     | then |
      | map  | transform | {id: order.id, total: order.sum}                                         | push |
      | push | http_call | POST the mapped order to /orders, up to 3 attempts, backing off 1 minute | done |
      | done | terminate | succeeded                                                                |      |

  Scenario Outline: A run between attempts is left as it was when another project <reach> it
    Given "globex" has a finished run of "order-sync"
    And a run of "order-sync" that is between attempts of "push"
    When "globex" <reach> "acme"'s run
    Then "globex" is told that run does not exist
    And the same request for its own run is answered
    And "acme"'s run is untouched

    Examples:
      | reach             |
      | retries a step of |
      | cancels           |
      | pauses            |
      | resumes           |
      | skips a step of   |
